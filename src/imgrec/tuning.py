"""Lightning's learning-rate finder and batch-size finder (lightning.pytorch.tuner.Tuner) on a training config:
what `imgrec tune` reports and what `optimizer.lr=auto` trains with.

The learning-rate finder (Smith 2017, as fastai and Lightning run it) trains `steps` batches with the learning rate
growing exponentially from `min_lr` to `max_lr`, stops when the loss blows up, and suggests the rate where the
smoothed loss fell fastest; the model's weights are restored afterwards. The batch-size finder doubles the batch
until a step runs out of memory (on a CPU it rarely does: `max_trials` bounds it).
"""

import copy
import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, open_dict

from imgrec import hardware
from imgrec.errors import ConfigError

log = logging.getLogger("imgrec")
PLACEHOLDER_LR = 1e-3  # what the task is built with; the finder sets the rate of every step itself


def refuse_distributed(cfg: DictConfig) -> None:
    devices, strategy = cfg.trainer.get("devices", 1), str(cfg.trainer.get("strategy", "auto"))
    several = devices == -1 or (isinstance(devices, int) and devices > 1) or (isinstance(devices, (list, str))
                                                                               and len(str(devices).split(",")) > 1)
    if several or "ddp" in strategy:
        raise ConfigError("optimizer.lr=auto: Lightning's learning-rate finder runs in one process, not under DDP; "
                          "find the rate first (imgrec tune, same overrides without trainer=ddp) and pass "
                          "optimizer.lr=<its suggestion>")


def tuner_trainer(cfg: DictConfig, folder: Path) -> L.Trainer:
    precision = cfg.trainer.precision
    if precision == "auto":
        precision = hardware.auto_precision(str(cfg.trainer.accelerator))
    return L.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=precision, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=str(folder), max_epochs=-1)


def find_lr(cfg: DictConfig, datamodule, build_task: Callable, folder: Path, min_lr: float = 1e-6,
            max_lr: float = 10.0, steps: int = 100) -> tuple[float, Path]:
    """(the suggested learning rate, the loss-against-learning-rate PNG in `folder`)."""
    from lightning.pytorch.tuner import Tuner

    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.optimizer.lr = PLACEHOLDER_LR
        cfg.scheduler = {"schedule": None, "interval": "step", "monitor": None}  # the finder's schedule is its own
    task = build_task(cfg, datamodule)
    folder.mkdir(parents=True, exist_ok=True)
    finder = Tuner(tuner_trainer(cfg, folder)).lr_find(task, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr,
                                                      num_training=steps, update_attr=False)
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None:
        raise ConfigError(f"optimizer.lr=auto: the learning-rate finder found no rate in [{min_lr:g}, {max_lr:g}] "
                          f"where the loss fell over {steps} steps; set optimizer.lr yourself")
    figure = finder.plot(suggest=True, show=False)
    axes = figure.axes[0]
    axes.set_title(f"learning-rate finder: {steps} steps from {min_lr:g} to {max_lr:g}; suggestion {suggestion:.3g}",
                   fontsize=9)
    path = folder / "lr_find.png"
    figure.savefig(path, dpi=120, bbox_inches="tight")
    log.info("tune: the learning-rate finder suggests optimizer.lr=%.4g (%s)", suggestion, path)
    return float(suggestion), path


def find_batch_size(cfg: DictConfig, datamodule, build_task: Callable, folder: Path, max_trials: int = 6) -> int:
    """The largest batch size (doubling from data.batch_size, `max_trials` times at most) whose steps fit in memory."""
    from lightning.pytorch.tuner import Tuner

    task = build_task(cfg, datamodule)
    found = Tuner(tuner_trainer(cfg, folder)).scale_batch_size(task, datamodule=datamodule, mode="power",
                                                               init_val=int(cfg.data.batch_size), max_trials=max_trials)
    return int(found or cfg.data.batch_size)


def log_finding(client, run_id: str, suggestion: float, figure: Path) -> None:
    """The finder behind a training run's optimizer.lr=auto: `tune/suggested_lr` and lr_find.png in the run, and a
    child run `lr_find` holding them (the Tuner's own run of batches, as MLflow's UI nests it)."""
    from imgrec.tracking.driver_run import ROLE_TAG, DriverRun

    client.log_metric(run_id, "tune/suggested_lr", suggestion)
    client.log_artifact(run_id, str(figure))
    child = DriverRun.child_of(client, run_id, "lr_find", {ROLE_TAG: "tune"})
    with child.running():
        child.log(metrics={"tune/suggested_lr": suggestion}, files=[figure])
