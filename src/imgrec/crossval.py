"""`python scripts/cv.py folds=K [train overrides]`: k-fold cross-validation of one training config.

Fold i is the same `imgrec.train.train` run as train.py with `data.folds=K data.fold=i`: it validates on the
i-th of K stratified folds of the training set (decided by data.split_seed alone; imgrec.data.splits) and
trains on the rest, and is tested on the untouched test set. The folds are child runs of one parent run (found
again by its tags) that gets the mean and standard deviation of every val/ and test/ metric the folds share,
a per-fold table (Markdown, CSV) and a box plot. A finished fold with the same config hash is reused, so an
interrupted cross-validation resumes, and a sweep can optimize the mean over folds (`sweep.folds=K`).
"""

import csv
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from mlflow.entities import Run
from omegaconf import DictConfig

from imgrec import config, drivers
from imgrec.config import save_hydra_files
from imgrec.errors import ConfigError, ImgrecError
from imgrec.progress import log_to_file
from imgrec.tracking import run as tracking
from imgrec.tracking.driver_run import DriverRun
from imgrec.tracking.identity import config_hash
from imgrec.tracking.query import summarize
from imgrec.tracking.store import open_store
from imgrec.train import train
from imgrec.validation import validate

log = logging.getLogger(__name__)

DRIVER_CONFIG = "cv"
CV_TAG, FOLD_TAG = "imgrec.cv", "imgrec.fold"


class CrossValidation:
    def __init__(self, folds: int, train_overrides: Sequence[str], experiment: str | None = None,
                 parent_tags: dict[str, str] | None = None, out_dir: Path | None = None):
        """`parent_tags`: more tags of the parent run (a sweep nests it under its own); `out_dir`: where the
        fold runs and the report go (default outputs/cv/<cv id>/)."""
        if not isinstance(folds, int) or folds < 2:
            raise ConfigError(f"folds must be an integer >= 2, got {folds!r}")
        experiment_override = [f"logger.experiment_name={experiment}"] if experiment else []
        self.folds, self.parent_tags = folds, parent_tags or {}
        self.train_overrides = [*train_overrides, *experiment_override]
        self.configs = [self.compose(fold, Path("unused")) for fold in range(folds)]  # a typo fails now
        base = self.configs[0]
        self.experiment = str(base.logger.experiment_name)
        self.cv_id = hashlib.sha256(" ".join(config_hash(c) for c in self.configs).encode()).hexdigest()[:16]
        self.root = Path(base.paths.root)
        self.out_dir = out_dir or self.root / "outputs" / "cv" / self.cv_id
        self.metric = str(base.optimized_metric)
        self.client = open_store(base.logger.tracking_uri)
        self.experiment_id = tracking.experiment_id(self.client, self.experiment, base.logger.artifact_location)

    def compose(self, fold: int, output_dir: Path) -> DictConfig:
        with drivers.composing(f"fold {fold} does not compose with conf/train.yaml"):
            cfg = config.compose([*self.train_overrides, f"data.folds={self.folds}", f"data.fold={fold}"], output_dir)
        validate(cfg)
        return cfg

    def find_fold(self, config_id: str) -> Run | None:
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`{tracking.CONFIG_HASH_TAG}` = '{config_id}' and attributes.status = 'FINISHED'",
            max_results=1, order_by=["attributes.start_time DESC"])
        return runs[0] if runs else None

    def run_fold(self, fold: int, parent: DriverRun) -> Run:
        config_id = config_hash(self.configs[fold])
        run = self.find_fold(config_id)
        if run is not None:
            log.info("fold %d of %d: reusing finished run %s", fold + 1, self.folds, run.info.run_id)
            return run
        output_dir = self.out_dir / f"fold{fold}"
        cfg = self.compose(fold, output_dir)
        log.info("fold %d of %d: training", fold + 1, self.folds)
        with log_to_file(output_dir):
            save_hydra_files(cfg, self.train_overrides, output_dir)
            train(cfg, tags={"mlflow.parentRunId": parent.run_id, "mlflow.runName": f"fold{fold}",
                             CV_TAG: self.cv_id, FOLD_TAG: str(fold)})
        run = self.find_fold(config_id)
        if run is None:
            raise ImgrecError(f"fold {fold}: its run is not in MLflow with config hash {config_id}")
        return run

    def run(self) -> tuple[float | None, str]:
        """Train (or reuse) every fold; (the mean of the optimized metric over folds, the Markdown report)."""
        parent = DriverRun.find_or_create(
            self.client, self.experiment_id, f"cv-{self.folds}fold-{self.cv_id[:8]}",
            {"imgrec.role": "cv", CV_TAG: self.cv_id, **self.parent_tags},
            extra_tags={"command": " ".join(["cv.py", f"folds={self.folds}", *self.train_overrides])},
            params={"folds": self.folds, "overrides": " ".join(self.train_overrides)})
        with parent.running():
            fold_runs = [self.run_fold(fold, parent) for fold in range(self.folds)]
            summary, markdown, files = self.report(fold_runs)
            parent.log(summary, files)
            parent.client.set_tag(parent.run_id, "mlflow.note.content", markdown)
        log.info("cross-validation written to %s (MLflow parent run %s)", self.out_dir, parent.run_id)
        return summary.get(f"{self.metric}_mean"), markdown

    def report(self, fold_runs: Sequence[Run]) -> tuple[dict[str, float], str, list[Path]]:
        """Mean and std over folds of every val/ and test/ metric all folds logged, a per-fold table, a box plot."""
        names = sorted(set.intersection(*(set(r.data.metrics) for r in fold_runs)))
        names = [n for n in names if n.startswith(("val/", "test/"))]
        summary = {}
        for name in names:
            stats = summarize(r.data.metrics[name] for r in fold_runs)
            summary[f"{name}_mean"] = stats.mean
            if stats.std is not None:
                summary[f"{name}_std"] = stats.std
        shown = [n for n in names if n in (self.metric, "val/acc", "test/acc", "val/loss", "test/loss")] or names[:4]
        lines = [f"## {self.folds}-fold cross-validation", "",
                 "Overrides: " + (" ".join(f"`{o}`" for o in self.train_overrides) or "none (the default job)") + "; "
                 "stratified folds of the training set by data.split_seed; test metrics on the whole test set.", "",
                 "| fold | run | " + " | ".join(shown) + " |", "|---:|---|" + "---:|" * len(shown)]
        for fold, run in enumerate(fold_runs):
            lines.append(f"| {fold} | {run.info.run_id[:8]} | " + " | ".join(f"{run.data.metrics[n]:.4f}" for n in shown) + " |")
        lines.append("| mean ± std | | " + " | ".join(summarize(r.data.metrics[n] for r in fold_runs).format(4)
                                                      for n in shown) + " |")
        markdown = "\n".join(lines) + "\n"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        md, table, png = (self.out_dir / f"cv.{suffix}" for suffix in ("md", "csv", "png"))
        md.write_text(markdown)
        with table.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["fold", "run_id", *names])
            for fold, run in enumerate(fold_runs):
                writer.writerow([fold, run.info.run_id, *(run.data.metrics[n] for n in names)])
        box_plot(png, fold_runs, [n for n in shown if not n.endswith("loss")] or shown, self.folds)
        return summary, markdown, [md, table, png]


def box_plot(path: Path, fold_runs: Sequence[Run], names: Sequence[str], folds: int) -> None:
    """One box per metric over the folds, each fold's value as a dot on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [[r.data.metrics[n] for r in fold_runs] for n in names]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2.5, 4))
    ax.boxplot(values, tick_labels=list(names))
    for i, column in enumerate(values, 1):
        ax.scatter([i] * len(column), column, color="tab:blue", zorder=3, s=14)
    ax.set_title(f"{folds}-fold cross-validation", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(argv: Sequence[str]) -> str:
    driver_overrides, train_overrides = drivers.split_overrides(argv, ("folds", "experiment"))
    cfg = drivers.compose(DRIVER_CONFIG, driver_overrides)
    _, markdown = CrossValidation(cfg.folds, train_overrides, cfg.experiment).run()
    print(markdown)
    return markdown


USAGE = """usage: python scripts/cv.py folds=K [train overrides]

  folds=K           stratified folds of the training set (decided by data.split_seed); default 5
  train overrides   go to every fold's run, as in train.py (model=resnet20 data=cifar10 ...)

Each fold is a child run of one parent run that gets the mean and std over folds of every val/ and test/
metric. Finished folds are reused: re-running the same command trains only what is missing."""


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: `python scripts/cv.py folds=K [overrides]`."""
    drivers.main(run, argv, USAGE, interrupted="finished folds are kept; re-run the same command to train the rest")
