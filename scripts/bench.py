"""Training throughput (images/s) of every model family through the whole pipeline.

    python scripts/bench.py                       # every family on fashion_mnist, CPU
    python scripts/bench.py --models cnn resnet20 --data cifar10 --steps 50
    python scripts/bench.py --override trainer=gpu --override data.batch_size=512

Each model trains for --warmup + --steps batches of real data (data loading, normalization,
augmentation, forward, backward, optimizer step, metric updates); only the last --steps are
timed. Runs are tracked in a throwaway MLflow store so the real one stays clean. `transfer` is
left out: its speed is its backbone's.
"""

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
from rich.console import Console
from rich.table import Table

from imgrec.config import CONF_DIR, compose
from imgrec.train import train

FAMILIES = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem != "transfer")


class Throughput(L.Callback):
    """Images per second over the training batches after `warmup`."""

    def __init__(self, warmup: int):
        self.warmup, self.images, self.start, self.seconds = warmup, 0, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx >= self.warmup:
            self.images += len(batch[0])
            self.seconds = time.perf_counter() - self.start


def measure(model: str, data: str, steps: int, warmup: int, overrides: list[str], root: Path) -> tuple[float, int]:
    cfg = compose(
        [
            f"model={model}", f"data={data}", f"paths.root={root}",
            "trainer.max_epochs=1", f"trainer.limit_train_batches={warmup + steps}",
            "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0", "test=false",
            "~callbacks.progress_bar", "~callbacks.model_summary", "~callbacks.epoch_summary",
            *overrides,
        ],
        output_dir=root / "outputs" / model,
    )
    throughput = Throughput(warmup)
    train(cfg, callbacks=[throughput])
    return throughput.images / throughput.seconds, cfg.data.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--steps", type=int, default=30, help="timed training batches per model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    args = parser.parse_args()

    table = Table(title=f"Training images/s, {args.data}")
    for column in ("model", "batch", "images/s"):
        table.add_column(column, justify="right" if column != "model" else "left")
    with tempfile.TemporaryDirectory() as scratch:
        for model in args.models:
            rate, batch = measure(model, args.data, args.steps, args.warmup, args.override, Path(scratch))
            table.add_row(model, str(batch), f"{rate:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
