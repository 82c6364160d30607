"""Training speed: images/s of every model family through the pipeline, or the whole pipeline against a
hand-written PyTorch loop (scripts/plain_loop.py) doing the same work.

    python scripts/bench.py                       # every family on fashion_mnist, CPU
    python scripts/bench.py --models cnn resnet20 --data cifar10 --steps 50
    python scripts/bench.py --override trainer=gpu --override data.batch_size=512
    python scripts/bench.py --vs-plain            # python train.py model=keras_cnn trainer.max_epochs=2, vs the loop
    python scripts/bench.py --vs-plain --pairs 5 --override model=cnn --override trainer.max_epochs=3

Throughput: each model trains for --warmup + --steps batches of real data (data loading,
normalization, augmentation, forward, backward, optimizer step, metric updates); only the last
--steps are timed. `transfer` is left out: its speed is its backbone's.

--vs-plain: whole processes, timed from start to exit: `python train.py OVERRIDES` and
`python scripts/plain_loop.py OVERRIDES`, alternating which goes first, --pairs times; it prints the
median wall time of each and their ratio. Runs are tracked in a throwaway MLflow store (created before
the first timing, as a user's store already exists), so the real one stays clean. Run it alone: two
jobs at once on two cores measure each other.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
from rich.console import Console
from rich.table import Table

from imgrec.config import CONF_DIR, compose
from imgrec.tracking.store import open_store
from imgrec.train import train

FAMILIES = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem != "transfer")
REPO = Path(__file__).resolve().parents[1]
VS_PLAIN = ["model=keras_cnn", "trainer.max_epochs=2"]  # the comparison of issue 11: Keras MNIST convnet, 2 epochs


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


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlruns/mlflow.db"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[1:])} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def vs_plain(overrides: list[str], pairs: int) -> None:
    overrides = overrides or VS_PLAIN
    pipeline = [sys.executable, str(REPO / "train.py"), *overrides]
    plain = [sys.executable, str(REPO / "scripts" / "plain_loop.py"), *overrides]
    walls: dict[str, list[float]] = {"pipeline": [], "plain": []}
    with tempfile.TemporaryDirectory() as scratch:
        open_store(f"sqlite:///{scratch}/mlruns/mlflow.db")
        for pair in range(pairs):
            order = [("pipeline", pipeline), ("plain", plain)]
            for name, command in order if pair % 2 == 0 else order[::-1]:
                seconds, out = timed(command, Path(scratch))
                walls[name].append(seconds)
                if name == "plain":
                    result = json.loads(out.strip().splitlines()[-1])
                print(f"pair {pair + 1}: {name:8s} {seconds:6.1f} s", flush=True)
    pipe, hand = statistics.median(walls["pipeline"]), statistics.median(walls["plain"])
    table = Table(title=f"Whole-process wall time, median of {pairs} pairs: {' '.join(overrides)}")
    for column in ("", "median s", "all s"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("python train.py", f"{pipe:.1f}", " ".join(f"{w:.1f}" for w in walls["pipeline"]))
    table.add_row("plain PyTorch loop", f"{hand:.1f}", " ".join(f"{w:.1f}" for w in walls["plain"]))
    Console().print(table)
    Console().print(f"[bold]ratio[/] {pipe / hand:.3f}  (plain loop: {result['epochs']} epochs, {result['precision']}, "
                    f"{result['memory_format']}, test acc {result['test_acc']:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--steps", type=int, default=30, help="timed training batches per model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    parser.add_argument("--vs-plain", action="store_true", help="time the whole pipeline against the plain loop")
    parser.add_argument("--pairs", type=int, default=3, help="--vs-plain: timed pairs (median)")
    args = parser.parse_args()
    if args.vs_plain:
        vs_plain(args.override, args.pairs)
        return

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
