"""The lifecycle of MLflow runs: one for training runs and driver runs alike (`lifecycle`), and what a
training run adds: identity, tags, params, artifacts.

Lightning's MLFlowLogger writes metrics and the best checkpoint; this module owns everything
else, including the status: FINISHED, FAILED (an exception) or KILLED (Ctrl-C, SIGTERM), so no
run stays RUNNING after its process is gone.
"""

import logging
import platform
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from imgrec.console import command_line
from imgrec.tracking import secrets
from imgrec.tracking.identity import CONFIG_HASH_TAG, RECIPE_HASH_TAG
from imgrec.tracking.query import find_runs
from imgrec.tracking.spool import spooling
from imgrec.tracking.store import heartbeat, process_tags

log = logging.getLogger(__name__)

ERROR_TAG = "error"  # why a run FAILED: the exception, on one line
CHECKPOINT_DIR_TAG = "imgrec.checkpoint_dir"
BEST_CHECKPOINT_TAG = "imgrec.best_checkpoint"


# What these experiments are, for MLflow's UI. 3.17.2's UI still opens in GenAI mode whatever the kind (its switch
# decides, unless the address says workflowType=machine_learning: imgrec.train.run_page); the kind is kept for
# versions that read it.
KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = {KIND_TAG: "custom_model_development"}


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id, created as Lightning's MLFlowLogger creates it (so drivers' parent runs and
    the training runs share it) if it does not exist yet, of the kind whose UI page lists the training runs."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.tags.get(KIND_TAG) is None:  # made by an earlier imgrec
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_KIND)
    except MlflowException:  # created by another process meanwhile
        return client.get_experiment_by_name(name).experiment_id


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
    runs = find_runs(client, experiment.experiment_id, {CONFIG_HASH_TAG: config_id}, status="!FINISHED")
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
        "command": secrets.redact(command_line()),
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


def flat_params(cfg: DictConfig, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """The resolved config as dotted keys, without Hydra's node and the top-level keys in `skip`. A value that
    cannot be resolved outside a Hydra run (${hydra:...} in a verb's config) is kept as it is written."""
    kept = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra" and k not in skip])
    flat: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
            return
        key = prefix[:-1]
        try:
            flat[key] = OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(cfg, key)}), resolve=True)["v"]
        except (OmegaConfBaseException, ValueError):  # HydraConfig is set only in a Hydra run
            flat[key] = node

    walk(OmegaConf.to_container(kept, resolve=False), "")
    return secrets.redact_params(flat)


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
def lifecycle(client: MlflowClient, run_id: str) -> Iterator[None]:
    """The run is RUNNING while the block runs, owned by this process (imgrec.tracking.store: process tags, a
    heartbeat; SIGTERM ends it like Ctrl-C); then FINISHED, FAILED (the error kept as tag `error`) or KILLED
    (Ctrl-C, SIGTERM, SystemExit: Lightning turns Ctrl-C into sys.exit(1)). Never left RUNNING."""
    client.update_run(run_id, status="RUNNING")
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in process_tags().items()])
    status = "FAILED"
    try:
        with sigterm_as_interrupt(), heartbeat(client, run_id):
            yield
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    except BaseException as err:
        client.set_tag(run_id, ERROR_TAG, secrets.redact(f"{type(err).__name__}: {err}")[:5000])
        raise
    finally:
        client.set_terminated(run_id, status)
        log.info("MLflow run %s ended %s", run_id, status)


@contextmanager
def tracked_run(logger, cfg: DictConfig, tags: dict[str, str], resumed: bool) -> Iterator[str]:
    """A training run (`logger`: its imgrec.tracking.logger.RunLogger): its params (unless resumed), tags and Hydra
    files, then its lifecycle; yields its id. Its writes to a remote server are queued (imgrec.tracking.spool)."""
    client, run_id = logger.experiment, logger.run_id  # the run exists from here on
    # Its owner first: a process killed from here on leaves a run that open_store() can tell is orphaned.
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in {**process_tags(), **tags}.items()])
    with spooling(client, logger.tracking_uri, run_id, Path(tags["hydra.output_dir"]), logger.offline_wait_s,
                  say=log.warning) as writer:
        logger.writer = writer
        try:
            if not resumed:
                logger.log_hyperparams(flat_params(cfg))
            hydra_dir = Path(tags["hydra.output_dir"]) / ".hydra"
            if hydra_dir.is_dir():  # config.yaml, overrides.yaml, hydra.yaml
                writer.log_artifacts(run_id, str(secrets.redacted_copy(hydra_dir)), "hydra")
            with lifecycle(writer, run_id):
                yield run_id
        finally:
            logger.writer = None
