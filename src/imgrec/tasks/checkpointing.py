"""Checkpoint fallbacks: what to keep when the configured checkpoint monitors a metric the run never logs."""

import logging

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

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
