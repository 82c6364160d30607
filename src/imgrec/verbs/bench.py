"""`imgrec bench [mode=throughput|vs_plain|fast_recipe|ablation|time_to_accuracy|profile|decode] [models=[cnn,resnet20]]
[training overrides]`: training speed, of the model families through the pipeline or of the whole pipeline against a
hand-written PyTorch loop (scripts/plain_loop.py) doing the same work; and how fast your own images are decoded.

    imgrec bench                                   # images/s of every family on fashion_mnist
    imgrec bench models=[cnn,resnet20] data=cifar10 steps=50
    imgrec bench trainer=gpu data.batch_size=512
    imgrec bench mode=vs_plain                     # python train.py model=keras_cnn trainer.max_epochs=2, vs the loop
    imgrec bench mode=vs_plain pairs=5 model=cnn trainer.max_epochs=3
    imgrec bench mode=fast_recipe                  # experiment=fmnist_fast vs the plain loop's 3 fp32 epochs of keras_cnn
    imgrec bench mode=ablation                     # experiment=fmnist_fast with each ingredient taken out
    imgrec bench mode=ablation recipe=fmnist_94    # experiment=fmnist_94: airbench's tricks, each in or out
    imgrec bench mode=time_to_accuracy             # test accuracy against wall time: the recipe ladder
    imgrec bench mode=profile                      # where vs_plain's two processes spend their time, by phase
    imgrec bench mode=decode                       # cold decode: 60,000 28-px PNGs, JPEG photos to 224 px

throughput: each model trains for `warmup` + `steps` batches of real data (data loading, normalization,
augmentation, forward, backward, optimizer step, metric updates); only the last `steps` are timed.

vs_plain, fast_recipe: whole processes, timed from start to exit: `python train.py OVERRIDES` and
`python scripts/plain_loop.py OVERRIDES`, alternating which goes first, `pairs` times; the medians of each and
their ratio. ablation: one whole run of experiment=<recipe> per ingredient taken out. time_to_accuracy: one
whole run of each recipe of the ladder (the default job, experiment=fmnist_fast, experiment=fmnist_94, the plain
loop's 3 fp32 epochs), their test accuracy against wall time in a PNG (time_to_accuracy.png). profile: vs_plain's
two processes, once each under py-spy (imgrec.profiling), their seconds by phase side by side. decode: the decode
cache made from cold files with every core (imgrec.data.decode_bench; the files are written once into
outputs/bench/decode/files). Runs are tracked in a
throwaway MLflow store (created before the first timing, as a user's store already exists), so the real one
stays clean. The table goes to outputs/bench/<mode>/ (bench.md, bench.csv). Run it alone: two jobs at once on
two cores measure each other.
"""

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

from imgrec import config, profiling
from imgrec.config import compose
from imgrec.errors import ConfigError, ImgrecError
from imgrec.jobs import Job, Verb
from imgrec.progress import images_in
from imgrec.report import Column, Figure, Report, Section, Table, figure, text_column
from imgrec.tracking.store import open_store
from imgrec.train import train

FAMILIES = [m for m in config.options("model") if m != "transfer"]
MODES = ("throughput", "vs_plain", "fast_recipe", "ablation", "time_to_accuracy", "profile", "decode")
REPO = Path(__file__).resolve().parents[3]  # train.py and scripts/plain_loop.py (a checkout)
VS_PLAIN = ["model=keras_cnn", "trainer.max_epochs=2"]  # the Keras MNIST convnet, 2 epochs
# the budget of experiment=fmnist_fast: the plain loop's 3 epochs of the Keras convnet as first measured (fp32)
FAST_BUDGET = ["model=keras_cnn", "trainer.max_epochs=3", "trainer.precision=32-true", "memory_format=contiguous_format"]
# ablation: a recipe with one ingredient taken out (or, last, one that was left out) at a time
ABLATIONS = {
    "fmnist_fast": {
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
    },
    "fmnist_94": {  # airbench's tricks (Jordan 2024) added to it one at a time, and other ways to spend the 120 s
        "the recipe": [],
        "+ test-time translations (1 px)": ["task.tta_translate=1"],
        "+ random crops (padding 2) and test-time translations": ["data.augment.crop_padding=2", "task.tta_translate=1"],
        "label smoothing 0.2 instead of 0.1": ["task.label_smoothing=0.2"],
        "+ an average of the weights (EMA 0.999)": ["task.ema=0.999"],
        "+ cutout (8 px)": ["data.augment.cutout=8"],
        "+ dropout 0.3 before the classifier": ["model.fc_dropout=0.3"],
        "weight decay 1e-3 instead of 5e-4": ["optimizer.weight_decay=1e-3"],
        "max-pool instead of a stride-2 first conv, 14 epochs": ["model.stride=[1,1,1,1]", "model.pool=[true,true,true,false]",
                                                                 "trainer.max_epochs=14", "trainer.check_val_every_n_epoch=14"],
        "twice the width, 10 epochs": ["model.channels=[32,64,128,256]", "trainer.max_epochs=10",
                                       "trainer.check_val_every_n_epoch=10"],
    },
}


# time_to_accuracy: the recipes, each a whole process of the pipeline (train.py) or of the plain loop
LADDER = {"the default job": ("pipeline", []), "experiment=fmnist_fast": ("pipeline", ["experiment=fmnist_fast"]),
          "experiment=fmnist_94": ("pipeline", ["experiment=fmnist_94"]),
          "plain loop, keras_cnn, 3 fp32 epochs": ("plain", FAST_BUDGET)}


class Throughput(L.Callback):
    """Images per second over the training batches after `warmup`."""

    def __init__(self, warmup: int):
        self.warmup, self.images, self.start, self.seconds = warmup, 0, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx >= self.warmup:
            self.images += images_in(batch)
            self.seconds = time.perf_counter() - self.start


def measure(model: str, steps: int, warmup: int, overrides: list[str], root: Path) -> tuple[float, int]:
    cfg = compose(
        [
            f"model={model}", f"paths.root={root}",
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
        raise ImgrecError(f"{' '.join(command[1:])} failed: {done.stderr.strip().splitlines()[-1] if done.stderr else ''}")
    return seconds, done.stdout


def test_acc(stdout: str) -> float:
    return float(re.findall(r"test/acc\S* ([0-9.]+)", stdout)[-1])


def side_by_side(pipeline_args: list[str], plain_args: list[str], pairs: int) -> Section:
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
                    accuracy = test_acc(out)
                print(f"pair {pair + 1}: {name:8s} {seconds:6.1f} s", flush=True)
    pipe, hand = statistics.median(walls["pipeline"]), statistics.median(walls["plain"])
    rows = [{"command": "python train.py " + " ".join(pipeline_args), "median_s": pipe,
             "all_s": " ".join(f"{w:.1f}" for w in walls["pipeline"]), "test_acc": accuracy},
            {"command": "python scripts/plain_loop.py " + " ".join(plain_args), "median_s": hand,
             "all_s": " ".join(f"{w:.1f}" for w in walls["plain"]), "test_acc": plain["test_acc"]}]
    columns = [text_column("command", "command"), Column("median s", "median_s", ".1f"), Column("all s", "all_s"),
               Column("test acc", "test_acc", ".4f")]
    return Section(text=f"Whole-process wall time, median of {pairs} pairs; ratio **{pipe / hand:.3f}** (plain loop: "
                        f"{plain['epochs']} epochs, {plain['precision']}, {plain['memory_format']}).",
                   table=Table("bench", columns, rows))


def profile(job: list[str]) -> list[Section]:
    """The main thread's seconds by phase, and the imports' by package, of the pipeline and of the plain loop."""
    scripts = {"pipeline": REPO / "train.py", "plain loop": REPO / "scripts" / "plain_loop.py"}
    summaries = {}
    with tempfile.TemporaryDirectory() as scratch:
        open_store(f"sqlite:///{scratch}/mlruns/mlflow.db")
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/mlruns/mlflow.db"}
        for name, script in scripts.items():
            raw = profiling.record([sys.executable, str(script), *job], Path(scratch) / f"{script.stem}.txt", env,
                                   Path(scratch))
            summaries[name] = profiling.summarise(raw)
            print(f"{name}: {sum(summaries[name][0].values()):.1f} s on the main thread", flush=True)
    sections = []
    for part, label in ((0, "phase (main thread)"), (1, "imports, by the package imported first")):
        keys = list(dict.fromkeys(k for summary in summaries.values() for k in summary[part]))
        rows = [{"what": key, **{name: summary[part].get(key, 0.0) for name, summary in summaries.items()}}
                for key in keys]
        rows.append({"what": "total", **{name: sum(summary[part].values()) for name, summary in summaries.items()}})
        columns = [text_column(label, "what"), *(Column(f"{name} (s)", name, ".2f") for name in summaries)]
        sections.append(Section(table=Table(f"profile_{'phases' if part == 0 else 'imports'}", columns, rows)))
    sections[0].text = (f"`python train.py {' '.join(job)}` and `python scripts/plain_loop.py {' '.join(job)}`, one "
                        f"run each under py-spy at {profiling.RATE} Hz; background threads (not on the critical path): "
                        + ", ".join(f"{name} {summary[2]:.1f} s" for name, summary in summaries.items()) + ".")
    return sections


def ablation(recipe: str, overrides: list[str]) -> Section:
    rows, base = [], None
    with tempfile.TemporaryDirectory() as scratch:
        open_store(f"sqlite:///{scratch}/mlruns/mlflow.db")
        for change, extra in ABLATIONS[recipe].items():
            seconds, out = timed([sys.executable, str(REPO / "train.py"), f"experiment={recipe}", *overrides, *extra],
                                 Path(scratch))
            accuracy = test_acc(out)
            base = base or (accuracy, seconds)
            print(f"{change}: test acc {accuracy:.4f}, {seconds:.1f} s", flush=True)
            rows.append({"change": change, "test_acc": accuracy, "delta_acc": accuracy - base[0], "wall_s": seconds,
                         "delta_wall_s": seconds - base[1]})
    columns = [text_column("change", "change"), Column("test acc", "test_acc", ".4f"), Column("Δ acc", "delta_acc", "+.4f"),
               Column("wall s", "wall_s", ".1f"), Column("Δ wall", "delta_wall_s", "+.1f")]
    return Section(text=f"experiment={recipe}, one ingredient changed at a time (one run each, seed 0).",
                   table=Table("bench", columns, rows))


def time_to_accuracy(overrides: list[str]) -> tuple[Section, Figure]:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        open_store(f"sqlite:///{scratch}/mlruns/mlflow.db")
        for recipe, (kind, args) in LADDER.items():
            script = REPO / ("train.py" if kind == "pipeline" else "scripts/plain_loop.py")
            seconds, out = timed([sys.executable, str(script), *args, *overrides], Path(scratch))
            accuracy = test_acc(out) if kind == "pipeline" else json.loads(out.strip().splitlines()[-1])["test_acc"]
            print(f"{recipe}: test acc {accuracy:.4f}, {seconds:.1f} s", flush=True)
            rows.append({"recipe": recipe, "wall_s": seconds, "test_acc": accuracy})
    columns = [text_column("recipe", "recipe"), Column("wall s", "wall_s", ".1f"), Column("test acc", "test_acc", ".4f")]
    text = ("Test accuracy against whole-process wall time (start to exit, one run each, seed 0" +
            (f"; {' '.join(overrides)}" if overrides else "") + ").")
    return Section(text=text, table=Table("bench", columns, rows)), Figure("time_to_accuracy.png",
                                                                          lambda: ladder_figure(rows))


def ladder_figure(rows: list[dict]):
    fig, ax = figure()
    for row in rows:
        ax.scatter(row["wall_s"], row["test_acc"] * 100, s=40)
        ax.annotate(row["recipe"], (row["wall_s"], row["test_acc"] * 100), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    ax.set(xlabel="wall time, whole process (s)", ylabel="test accuracy (%)", title="Time to accuracy on this machine")
    ax.set_xlim(0, 1.45 * max(row["wall_s"] for row in rows))  # room for the labels right of the points
    ax.grid(alpha=0.3)
    return fig


def throughput(models: list[str], steps: int, warmup: int, overrides: list[str]) -> Section:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for model in models:
            rate, batch = measure(model, steps, warmup, overrides, Path(scratch))
            print(f"{model}: {rate:,.0f} img/s (batch {batch})", flush=True)
            rows.append({"model": model, "batch": batch, "img_per_s": rate})
    columns = [text_column("model", "model"), Column("batch", "batch"), Column("images/s", "img_per_s", ",.0f")]
    text = f"Training images/s, {steps} timed batches after {warmup}" + (f"; {' '.join(overrides)}" if overrides else "")
    return Section(text=text + ".", table=Table("bench", columns, rows))


def decode_rates(scratch: Path) -> Section:
    from imgrec.data.decode_bench import measure

    rows = measure(scratch)
    columns = [text_column("files", "files"), Column("images", "images", ",d"), Column("seconds", "seconds", ".1f"),
               Column("img/s", "img_per_s", ",.0f"), Column("img/s per core", "img_per_s_per_core", ",.0f")]
    return Section(text=f"Cold decode into a new cache, {rows[0]['cores']} worker processes.",
                   table=Table("bench", columns, rows))


def vs_plain_job(overrides: list[str]) -> list[str]:
    """What vs_plain and profile run in both processes: the overrides, or the Keras convnet's 2 epochs when they only
    say where runs go (paths.*)."""
    timed_work = [o for o in overrides if not o.lstrip("+~").startswith("paths.")]
    return overrides if timed_work else [*VS_PLAIN, *overrides]


def run(job: Job) -> Report:
    cfg, overrides = job.cfg, job.train_overrides
    figures: list[Figure] = []
    if cfg.mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if cfg.mode == "throughput":
        models = FAMILIES if cfg.models is None else [str(m) for m in cfg.models]
        unknown = [m for m in models if m not in FAMILIES]
        if unknown:
            raise ConfigError(f"models: unknown {unknown}; choose from {', '.join(FAMILIES)}")
        sections = [throughput(models, cfg.steps, cfg.warmup, overrides)]
    elif cfg.mode == "vs_plain":
        timed_job = vs_plain_job(overrides)
        sections = [side_by_side(timed_job, timed_job, cfg.pairs)]
    elif cfg.mode == "profile":
        sections = profile(vs_plain_job(overrides))
    elif cfg.mode == "fast_recipe":
        sections = [side_by_side(["experiment=fmnist_fast", *overrides], FAST_BUDGET, cfg.pairs)]
    elif cfg.mode == "decode":
        sections = [decode_rates(Path(cfg.paths.root) / "outputs" / "bench" / "decode" / "files")]
    elif cfg.mode == "ablation":
        if cfg.recipe not in ABLATIONS:
            raise ConfigError(f"recipe must be one of {', '.join(ABLATIONS)}, got {cfg.recipe!r}")
        sections = [ablation(str(cfg.recipe), overrides)]
    else:
        section, plot = time_to_accuracy(overrides)
        sections, figures = [section], [plot]
    report = Report(f"Training speed: {cfg.mode}", sections, name="bench", figures=figures)
    report.publish(Path(cfg.paths.root) / "outputs" / "bench" / cfg.mode)
    return report


VERB = Verb("bench", __doc__, run, train_keys=("mode", "models", "steps", "warmup", "pairs", "recipe"),
            choices={"mode": MODES, "models": FAMILIES, "recipe": tuple(ABLATIONS)})
