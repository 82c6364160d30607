"""Optimizer and LR-schedule wiring shared by the tasks (conf/optimizer, conf/scheduler)."""

import inspect
import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch

# Schedule arguments that mean "the length of the run"; left null in a config, they are filled
# with the run's total number of optimizer steps (or epochs, for interval=epoch).
LENGTH_ARGS = ("T_max", "total_steps")


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.1,
                  min_factor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over the first `warmup` fraction of the run, then cosine decay to `min_factor` x
    the optimizer's lr: the recipe transformers need (conf/experiment/vit.yaml)."""
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"scheduler.schedule.warmup must be a fraction of the run in [0, 1), got {warmup}")
    warmup_steps = round(warmup * total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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
