"""Checkpoints: written atomically, and what to keep when the configured one monitors a metric the run never logs."""

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from imgrec.errors import CheckpointWriteError

log = logging.getLogger(__name__)


def latest_if_unlogged(trainer: L.Trainer, logged: set[str], hint: str = "") -> ModelCheckpoint | None:
    """A ModelCheckpoint with the configured one's settings that keeps the latest epoch, when the configured
    one monitors a metric outside `logged` (Lightning would fail at the first validation); else None.

    Return it from `LightningModule.configure_callbacks`: Lightning then replaces the configured one.
    """
    configured = trainer.checkpoint_callback
    if configured is None or configured.monitor is None or configured.monitor in logged:
        return None
    log.info("Checkpoints: the latest epoch; this run does not log %s%s", configured.monitor, hint)
    return ModelCheckpoint(
        dirpath=configured.dirpath,
        filename=configured.filename,
        monitor=None,
        save_top_k=1,
        save_last=configured.save_last,
        auto_insert_metric_name=configured.auto_insert_metric_name,
        save_weights_only=configured.save_weights_only,
        verbose=configured.verbose,
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoints written to a temporary file beside the target, flushed to disk, then renamed over it: a
    write that fails (no space, a read-only folder) or is killed leaves the previous checkpoint whole, and ends the
    run with one line naming the file. (Lightning's own write goes through a temporary file in /tmp, and a move
    across file systems is a copy that can fail halfway.) Remote paths are Lightning's."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as err:
            temporary.unlink(missing_ok=True)
            raise CheckpointWriteError(f"{path}: the checkpoint could not be written ({err.strerror or err}); "
                                       "the previous checkpoint is intact (ckpt_path=last resumes from it)") from None
