"""Optimizer and LR-schedule wiring shared by the tasks (conf/optimizer, conf/scheduler)."""

import inspect
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch

# Schedule arguments that mean "the length of the run"; left null in a config, they are filled
# with the run's total number of optimizer steps (or epochs, for interval=epoch).
LENGTH_ARGS = ("T_max", "total_steps")


def configure(
    parameters: Iterable[torch.nn.Parameter],
    optimizer: Callable[..., torch.optim.Optimizer],
    scheduler: dict[str, Any] | None,
    run_length: Callable[[str], int],
) -> dict[str, Any]:
    """Build what `LightningModule.configure_optimizers` returns.

    `scheduler` is conf/scheduler/*.yaml instantiated: {schedule: partial | None, interval, monitor}.
    `run_length(interval)` gives the number of scheduler steps in the whole run.
    """
    opt = optimizer(params=parameters)
    schedule = (scheduler or {}).get("schedule")
    if schedule is None:
        return {"optimizer": opt}
    interval = scheduler.get("interval", "epoch")
    schedule = _fill_length(schedule, run_length(interval))
    config = {"scheduler": schedule(optimizer=opt), "interval": interval}
    if scheduler.get("monitor"):
        config["monitor"] = scheduler["monitor"]
    return {"optimizer": opt, "lr_scheduler": config}


def _fill_length(schedule: partial, length: int) -> partial:
    accepted = inspect.signature(schedule.func).parameters
    missing = {arg: length for arg in LENGTH_ARGS if arg in accepted and schedule.keywords.get(arg) is None}
    return partial(schedule, **missing) if missing else schedule


def run_length(trainer) -> Callable[[str], int]:
    """Steps (interval='step') or epochs (interval='epoch') that `trainer` will run."""

    def length(interval: str) -> int:
        if interval == "step":
            return int(trainer.estimated_stepping_batches)
        return int(trainer.max_epochs) if trainer.max_epochs and trainer.max_epochs > 0 else 1

    return length
