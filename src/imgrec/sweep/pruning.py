"""Reporting the metric to Optuna each epoch (so the pruner can stop a trial), and when that is possible."""

import math

import lightning as L
import optuna
from omegaconf import DictConfig, ListConfig


class TrialReporter(L.Callback):
    """Reports `metric` to the Optuna trial after each validation epoch and prunes hopeless trials.

    A NaN or infinite metric prunes at once (the trial cannot recover a usable value). Needs the trial
    in this process: attach it only to single-process trainers (see launch_mode()).
    """

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric, self.epochs = trial, metric, 0

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        epoch, value = trainer.current_epoch, float(trainer.callback_metrics[self.metric])
        self.epochs = epoch + 1
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{self.metric} is {value} after epoch {epoch + 1}")
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.metric}={value:.4f} after epoch {epoch + 1} is worse than the pruner allows")


def launch_mode(trainer: DictConfig) -> str:
    """'single' (prunable), 'spawn' (ranks spawned from this process) or 'rerun' (ranks re-run the command)."""
    import torch

    strategy, devices = str(trainer.get("strategy") or "auto"), trainer.get("devices", "auto")
    if isinstance(devices, (list, ListConfig)):
        count = len(devices)
    elif str(devices) in ("-1", "auto"):
        count = 1 if str(trainer.get("accelerator")) == "cpu" else max(torch.cuda.device_count(), 1)
    else:
        count = int(devices)
    count *= int(trainer.get("num_nodes") or 1)
    if count == 1 and not any(s in strategy for s in ("ddp", "fsdp", "deepspeed")):
        return "single"
    return "spawn" if any(s in strategy for s in ("spawn", "fork", "notebook")) else "rerun"
