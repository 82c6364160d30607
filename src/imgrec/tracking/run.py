"""The lifecycle of one MLflow run: identity, tags, params, artifacts and a final status.

Lightning's MLFlowLogger writes metrics and the best checkpoint; this module owns everything
else, including the status: FINISHED, FAILED (an exception) or KILLED (Ctrl-C, SIGTERM), so no
run stays RUNNING after its process is gone.
"""

import logging
import platform
import shlex
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch.loggers import MLFlowLogger
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from imgrec.tracking.store import heartbeat, process_tags

log = logging.getLogger(__name__)

CONFIG_HASH_TAG = "imgrec.config_hash"
RECIPE_HASH_TAG = "imgrec.recipe_hash"  # the config hash without the seed: runs that differ only by seed share it
CHECKPOINT_DIR_TAG = "imgrec.checkpoint_dir"
BEST_CHECKPOINT_TAG = "imgrec.best_checkpoint"


def experiment_id(client: MlflowClient, name: str, artifact_location: str) -> str:
    """The experiment's id, created as Lightning's MLFlowLogger creates it (so drivers' parent runs and
    the training runs share it) if it does not exist yet."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # created by another process meanwhile
        return client.get_experiment_by_name(name).experiment_id


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger, except that it never ends the run: Lightning would mark it FINISHED when
    `fit` returns, before the test, so a crash during the test would leave a FINISHED run without test
    metrics. `tracked_run` gives the run its final status instead; here only the checkpoints are logged."""

    def finalize(self, status: str = "success") -> None:
        if self._initialized and self._checkpoint_callback:
            self._scan_and_log_checkpoints(self._checkpoint_callback)


@dataclass(frozen=True)
class Resume:
    run_id: str
    checkpoint: Path


def find_resumable(client: MlflowClient, experiment_name: str, config_id: str) -> Resume | None:
    """The latest interrupted (KILLED or FAILED) run with this config hash that left a readable checkpoint.
    A RUNNING run is left alone: after open_store() has ended the orphans, its process is alive."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{CONFIG_HASH_TAG}` = '{config_id}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    for run in (r for r in runs if r.info.status in ("KILLED", "FAILED")):
        checkpoint = readable_checkpoint(Path(run.data.tags.get(CHECKPOINT_DIR_TAG, "")))
        if checkpoint is not None:
            return Resume(run.info.run_id, checkpoint)
        log.warning("ckpt_path=last: run %s was interrupted before it wrote a checkpoint; it stays %s",
                    run.info.run_id, run.info.status)
    return None


def readable_checkpoint(folder: Path) -> Path | None:
    """last.ckpt, or when it is damaged (the process died while writing it) the newest other checkpoint.
    Checkpoints are zip archives: a truncated one has no central directory at its end."""
    if not folder.is_dir():
        return None
    others = sorted((p for p in folder.glob("*.ckpt") if p.name != "last.ckpt"), key=lambda p: p.stat().st_mtime)
    for candidate in [folder / "last.ckpt", *reversed(others)]:
        if candidate.is_file() and zipfile.is_zipfile(candidate):
            return candidate
        if candidate.is_file():
            log.warning("ckpt_path=last: %s is damaged (half-written?); trying the previous checkpoint", candidate)
    return None


CODE_DIR = Path(__file__).resolve().parents[3]  # the checkout imgrec runs from (src layout)


def _git(*args: str) -> str | None:
    """git's answer about the code that is running (not the cwd), or None outside a checkout (an installed imgrec)."""
    if not (CODE_DIR / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", *args], cwd=CODE_DIR, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def run_tags(output_dir: str, config_id: str, recipe_id: str, checkpoint_dir: str) -> dict[str, str]:
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    tags = {
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "mlflow.source.name": sys.argv[0],
        "host": platform.node(),
        "hydra.output_dir": output_dir,
        CONFIG_HASH_TAG: config_id,
        RECIPE_HASH_TAG: recipe_id,
        CHECKPOINT_DIR_TAG: checkpoint_dir,
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git.dirty"] = str(bool(status))
    return tags


def flat_params(cfg: DictConfig) -> dict[str, object]:
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    flat: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(container, "")
    return flat


def raise_keyboard_interrupt(signum, frame) -> None:
    """A SIGTERM handler: end like Ctrl-C, so runs and trials are marked KILLED, not left RUNNING."""
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM (kill, a scheduler's preemption) raises KeyboardInterrupt like Ctrl-C."""
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def tracked_run(logger: MLFlowLogger, cfg: DictConfig, tags: dict[str, str], resumed: bool) -> Iterator[str]:
    """Start (or reopen) the run, yield its id, and give it a final status however the block ends."""
    client, run_id = logger.experiment, logger.run_id
    if resumed:
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    else:
        logger.log_hyperparams(flat_params(cfg))
    for key, value in {**tags, **process_tags()}.items():  # process tags: who owns the run while it is RUNNING
        client.set_tag(run_id, key, value)
    hydra_dir = Path(tags["hydra.output_dir"]) / ".hydra"
    if hydra_dir.is_dir():  # config.yaml, overrides.yaml, hydra.yaml
        client.log_artifacts(run_id, str(hydra_dir), "hydra")

    status = "FAILED"
    try:
        with sigterm_as_interrupt(), heartbeat(client, run_id):  # SIGTERM ends the run like Ctrl-C: KILLED
            yield run_id
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"  # Lightning turns Ctrl-C into sys.exit(1)
        raise
    except BaseException as err:
        client.set_tag(run_id, "error", f"{type(err).__name__}: {err}"[:5000])
        raise
    finally:
        client.set_terminated(run_id, status)
        log.info("MLflow run %s ended %s", run_id, status)


def log_artifact(logger, path: Path, artifact_path: str | None = None) -> None:
    """Log a file to the run, if the run is tracked by MLflow."""
    if isinstance(logger, MLFlowLogger):
        logger.experiment.log_artifact(logger.run_id, str(path), artifact_path)
