"""Training speed: images/s of every model family through the pipeline, or the whole pipeline against a
hand-written PyTorch loop (scripts/plain_loop.py) doing the same work.

    python scripts/bench.py                       # every family on fashion_mnist, CPU
    python scripts/bench.py --models cnn resnet20 --data cifar10 --steps 50
    python scripts/bench.py --override trainer=gpu --override data.batch_size=512
    python scripts/bench.py --vs-plain            # python train.py model=keras_cnn trainer.max_epochs=2, vs the loop
    python scripts/bench.py --vs-plain --pairs 5 --override model=cnn --override trainer.max_epochs=3
    python scripts/bench.py --fast-recipe         # experiment=fmnist_fast vs the plain loop's 3 fp32 epochs of keras_cnn
    python scripts/bench.py --ablation            # experiment=fmnist_fast with each ingredient taken out

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
import re
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
# issue 11's budget for experiment=fmnist_fast: the plain loop's 3 epochs of the Keras convnet as first measured (fp32)
FAST_BUDGET = ["model=keras_cnn", "trainer.max_epochs=3", "trainer.precision=32-true", "memory_format=contiguous_format"]
# --ablation: experiment=fmnist_fast with one ingredient taken out (or, last, one that was left out) at a time
ABLATION = {
    "the recipe": [],
    "fp32 instead of bf16 autocast": ["trainer.precision=32-true"],
    "NCHW instead of channels_last": ["memory_format=contiguous_format"],
    "max-pool instead of a stride-2 first conv": ["model.stride=[1,1,1,1]", "model.pool=[true,true,true,false]"],
    "no flips (training or test)": ["data.augment.hflip=false", "task.tta_flip=false"],
    "cross-entropy instead of label smoothing": ["task.loss=cross_entropy"],
    "no test-time flip": ["task.tta_flip=false"],
    "cosine schedule instead of one-cycle": ["scheduler=cosine"],
    "Adam (one-cycle to 2e-3) instead of Nesterov SGD": ["optimizer=adam", "optimizer.lr=2e-3"],
    "validating every epoch on 5,000 images": ["trainer.check_val_every_n_epoch=1", "data.val_size=5000"],
    "with random crops (padding 2)": ["data.augment.crop_padding=2"],
}


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


def side_by_side(pipeline_args: list[str], plain_args: list[str], pairs: int) -> None:
    """Whole-process wall times of `python train.py PIPELINE_ARGS` and `python scripts/plain_loop.py PLAIN_ARGS`."""
    commands = {"pipeline": [sys.executable, str(REPO / "train.py"), *pipeline_args],
                "plain": [sys.executable, str(REPO / "scripts" / "plain_loop.py"), *plain_args]}
    walls: dict[str, list[float]] = {"pipeline": [], "plain": []}
    with tempfile.TemporaryDirectory() as scratch:
        open_store(f"sqlite:///{scratch}/mlruns/mlflow.db")
        for pair in range(pairs):
            for name in ("pipeline", "plain") if pair % 2 == 0 else ("plain", "pipeline"):
                seconds, out = timed(commands[name], Path(scratch))
                walls[name].append(seconds)
                if name == "plain":
                    plain = json.loads(out.strip().splitlines()[-1])
                else:
                    accuracy = re.findall(r"test/acc\S* ([0-9.]+)", out)[-1]
                print(f"pair {pair + 1}: {name:8s} {seconds:6.1f} s", flush=True)
    pipe, hand = statistics.median(walls["pipeline"]), statistics.median(walls["plain"])
    table = Table(title=f"Whole-process wall time, median of {pairs} pairs")
    for column in ("command", "median s", "all s", "test acc"):
        table.add_column(column, justify="left" if column == "command" else "right")
    table.add_row("python train.py " + " ".join(pipeline_args), f"{pipe:.1f}",
                  " ".join(f"{w:.1f}" for w in walls["pipeline"]), accuracy)
    table.add_row("python scripts/plain_loop.py " + " ".join(plain_args), f"{hand:.1f}",
                  " ".join(f"{w:.1f}" for w in walls["plain"]), f"{plain['test_acc']:.4f}")
    Console().print(table)
    Console().print(f"[bold]ratio[/] {pipe / hand:.3f}  (plain loop: {plain['epochs']} epochs, {plain['precision']}, "
                    f"{plain['memory_format']})")


def ablation(overrides: list[str]) -> None:
    table = Table(title="experiment=fmnist_fast, one ingredient changed at a time (one run each, seed 0)")
    for column in ("change", "test acc", "Δ acc", "wall s", "Δ wall"):
        table.add_column(column, justify="left" if column == "change" else "right")
    with tempfile.TemporaryDirectory() as scratch:
        open_store(f"sqlite:///{scratch}/mlruns/mlflow.db")
        base = None
        for change, extra in ABLATION.items():
            seconds, out = timed([sys.executable, str(REPO / "train.py"), "experiment=fmnist_fast", *overrides, *extra],
                                 Path(scratch))
            accuracy = float(re.findall(r"test/acc\S* ([0-9.]+)", out)[-1])
            base = base or (accuracy, seconds)
            print(f"{change}: test acc {accuracy:.4f}, {seconds:.1f} s", flush=True)
            table.add_row(change, f"{accuracy:.4f}", f"{accuracy - base[0]:+.4f}", f"{seconds:.1f}",
                          f"{seconds - base[1]:+.1f}")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--steps", type=int, default=30, help="timed training batches per model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    parser.add_argument("--vs-plain", action="store_true", help="time the whole pipeline against the plain loop")
    parser.add_argument("--fast-recipe", action="store_true",
                        help="experiment=fmnist_fast against the plain loop's 3 fp32 epochs of keras_cnn")
    parser.add_argument("--ablation", action="store_true",
                        help="experiment=fmnist_fast with each ingredient taken out, one run each")
    parser.add_argument("--pairs", type=int, default=3, help="--vs-plain, --fast-recipe: timed pairs (median)")
    args = parser.parse_args()
    if args.ablation:
        ablation(args.override)
        return
    if args.vs_plain:
        side_by_side(args.override or VS_PLAIN, args.override or VS_PLAIN, args.pairs)
        return
    if args.fast_recipe:
        side_by_side(["experiment=fmnist_fast", *args.override], FAST_BUDGET, args.pairs)
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
