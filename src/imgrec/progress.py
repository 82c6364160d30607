"""One log line per epoch: readable in CI logs and train.log, where a live progress bar is not."""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from rich import get_console
from rich.table import Table
from torchmetrics import Metric, MetricCollection
from typing_extensions import override

log = logging.getLogger("imgrec")

# The headline numbers of each kind of task; whichever were logged are shown.
SHOWN = (
    "train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "val/robust_acc",  # classification
    "val/psnr", "val/ssim",  # autoencoding
    "train/loss_d", "train/loss_g", "val/fd_classifier",  # GAN
)


class EpochSummary(L.Callback):
    """Logs e.g. `epoch 3/10  train/loss 0.3120 ... val/acc 0.9120  (epoch 24.8 s, training 2210 img/s)`, and
    the training rate as the metric `perf/train_img_per_s` (training batches only, validation not counted).

    The line waits for the next epoch's start (or the end of training): tasks log an epoch's training
    metrics in their own on_train_epoch_end, which Lightning calls after the callbacks'.
    """

    def __init__(self):
        self._pending: tuple | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)
        self._start, self._train_seconds, self._images = time.perf_counter(), None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._images += images_in(batch)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - self._start
        rate = self._images * trainer.world_size / (self._train_seconds or seconds)
        self._pending = (trainer.current_epoch + 1, seconds, rate)
        pl_module.log("perf/train_img_per_s", rate, rank_zero_only=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer)

    def _report(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        epoch, seconds, rate = self._pending
        self._pending = None
        metrics = trainer.callback_metrics
        shown = "  ".join(f"{name} {float(metrics[name]):.4f}" for name in SHOWN if name in metrics)
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info("epoch %d%s  %s  (epoch %.1f s, training %.0f img/s)", epoch, total, shown, seconds, rate)


class TimeToAccuracy(L.Callback):
    """Logs `perf/seconds_to_val_acc_0.90` (and one per threshold) the first time the validation accuracy reaches
    each threshold: seconds since fitting began (validation included; process start-up and the final test not). A resumed run counts on from its checkpoint's clock. Runs without `val/acc` log nothing.
    """

    def __init__(self, thresholds=(0.8, 0.85, 0.9, 0.92, 0.93, 0.94)):
        self.thresholds = sorted(float(t) for t in thresholds)
        self.reached: dict[float, float] = {}
        self._before = 0.0  # seconds already trained before this process (a resumed run)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def seconds(self) -> float:
        return self._before + time.perf_counter() - self._start

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the epoch's validation ran before this hook, and its val/acc is in the callback metrics by now (a
        # callback's on_validation_epoch_end runs before the task has logged it)
        acc = trainer.callback_metrics.get("val/acc")
        if acc is None:
            return
        for threshold in self.thresholds:
            if threshold not in self.reached and float(acc) >= threshold:
                self.reached[threshold] = self.seconds()
                pl_module.log(f"perf/seconds_to_val_acc_{threshold:.2f}", self.reached[threshold], rank_zero_only=True)

    def state_dict(self) -> dict:
        return {"seconds": self.seconds() if hasattr(self, "_start") else self._before,
                "reached": {str(t): s for t, s in self.reached.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        self._before = state_dict["seconds"]
        self.reached = {float(t): s for t, s in state_dict["reached"].items()}


def images_in(batch) -> int:
    """The images of a training batch: (images, labels), or {"labeled": ..., "unlabeled": ...} (semi-supervised)."""
    if isinstance(batch, dict):
        return sum(images_in(part) for part in batch.values())
    return len(batch[0])


@contextmanager
def log_to_file(output_dir: Path) -> Iterator[None]:
    """Log lines also go to `output_dir`/train.log, as under train.py (for drivers that call train())."""
    output_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


class NetworkSummary(RichModelSummary):
    """Lightning's rich summary of the network's layers, without what is not a layer: the task's torchmetrics
    objects (modules to Lightning, so its table lists them) and the FLOPs column, which Lightning fills only when
    the module has an example input (imgrec's FLOPs are in its cost profile)."""

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._max_depth or not trainer.is_global_zero:
            return
        summary = self._summary(trainer, pl_module)
        metrics = {name for name, module in pl_module.named_modules() if isinstance(module, (Metric, MetricCollection))}
        data = dict(summary._get_summary_data())
        keep = [i for i, name in enumerate(data["Name"]) if name not in metrics]
        table = Table(header_style="bold magenta")
        for column in (" ", "Name", "Type", "Params", "Mode"):
            table.add_column(column, justify="right" if column == "Params" else "left",
                             style="dim" if column == " " else None)
        for i in keep:
            table.add_row(str(len(table.rows)), *(data[column][i] for column in ("Name", "Type", "Params", "Mode")))
        console = get_console()
        console.print(table)
        trainable, total = summary.trainable_parameters, summary.total_parameters
        console.print(f"[bold]Trainable params[/]: {get_human_readable_count(trainable)}   [bold]Non-trainable "
                      f"params[/]: {get_human_readable_count(total - trainable)}   [bold]Total params[/]: "
                      f"{get_human_readable_count(total)} ({summary.model_size:.2f} MB)", soft_wrap=True)
