"""`imgrec cv folds=K [training overrides]`: k-fold cross-validation of one training config.

Fold i is the run `imgrec train` makes with `data.folds=K data.fold=i`: it validates on the i-th of K stratified
folds of the training set (decided by data.split_seed alone; imgrec.data.splits) and trains on the rest, and is
tested on the untouched test set. The folds are child runs of one parent run (found again by its tags), which gets
the mean and standard deviation of every val/ and test/ metric the folds share, a per-fold table (cv.md, cv.csv)
and a box plot (cv.png), also under outputs/cv/<cv id>/. A finished fold with the same config hash is reused, so
an interrupted cross-validation resumes, and a sweep can optimize the mean over folds (`sweep.folds=K`).
"""

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf

from imgrec import launch
from imgrec.errors import ConfigError
from imgrec.jobs import Job, TrainJob, Verb, reuse_or_train
from imgrec.report import Column, Figure, Report, Section, Table, figure, text_column
from imgrec.stats import describe
from imgrec.tracking.driver_run import DriverRun
from imgrec.tracking.store import open_store

log = logging.getLogger(__name__)
CV_TAG, FOLD_TAG = "imgrec.cv", "imgrec.fold"
SHOWN = ("val/acc", "test/acc", "val/loss", "test/loss")  # the per-fold table's columns, with the optimized metric


class CrossValidation:
    def __init__(self, folds: int, train_overrides: Sequence[str], experiment: str | None = None,
                 parent_tags: Mapping[str, str] | None = None, out_dir: Path | None = None,
                 launcher: DictConfig | None = None):
        """`parent_tags`: more tags of the parent run (a sweep nests it under its own); `out_dir`: where the
        fold runs and the report go (default outputs/cv/<cv id>/). Every fold composes now: a typo fails here."""
        if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
            raise ConfigError(f"folds must be an integer >= 2, got {folds!r}")
        self.folds, self.parent_tags = folds, dict(parent_tags or {})
        self.train_overrides = [*train_overrides, *([f"logger.experiment_name={experiment}"] if experiment else [])]
        self.jobs = [TrainJob([*self.train_overrides, f"data.folds={folds}", f"data.fold={fold}"], name=f"fold{fold}",
                              what=f"fold {fold}", reuse={}) for fold in range(folds)]
        self.cv_id = hashlib.sha256(" ".join(j.config_id for j in self.jobs).encode()).hexdigest()[:16]
        for job in self.jobs:
            job.tags.update({CV_TAG: self.cv_id, FOLD_TAG: job.name.removeprefix("fold")})
        base = self.jobs[0].cfg
        self.out_dir = out_dir or Path(base.paths.root) / "outputs" / "cv" / self.cv_id
        self.metric = str(base.optimized_metric)
        self.launcher = launcher if launcher is not None else OmegaConf.create({"kind": "local"})
        launch.check(self.launcher, base.logger.tracking_uri)
        self.client = open_store(base.logger.tracking_uri)

    def run(self) -> tuple[float | None, Report]:
        """Train (or reuse) every fold; (the mean of the optimized metric over folds, the report)."""
        parent = DriverRun.find_or_create(
            self.client, self.jobs[0].experiment_id(self.client), f"cv-{self.folds}fold-{self.cv_id[:8]}",
            {"imgrec.role": "cv", CV_TAG: self.cv_id, **self.parent_tags},
            extra_tags={"command": " ".join(["imgrec cv", f"folds={self.folds}", *self.train_overrides])},
            params={"folds": self.folds, "overrides": " ".join(self.train_overrides)})
        with parent.running():
            folds = [(job, self.out_dir / job.name) for job in self.jobs]
            for line in launch.train_all(folds, self.launcher, self.client, parent.run_id, self.out_dir / "launch"):
                log.warning("launcher: %s", line)
            local = self.launcher.kind == "local"
            runs = [reuse_or_train(job, self.client, out, parent.run_id, train=local) for job, out in folds]
            report = self.report(runs)
            report.publish(self.out_dir, parent)
        return report.metrics.get(f"{self.metric}_mean"), report

    def report(self, runs: Sequence[Run]) -> Report:
        """Mean and std over folds of every val/ and test/ metric all folds logged, a per-fold table, a box plot."""
        shared = set.intersection(*(set(r.data.metrics) for r in runs))
        names = sorted(n for n in shared if n.startswith(("val/", "test/")))
        summaries = {name: describe(r.data.metrics[name] for r in runs) for name in names}
        metrics = {f"{name}_{stat}": value for name, s in summaries.items()
                   for stat, value in (("mean", s.mean), ("std", s.std)) if value is not None}
        shown = [n for n in names if n in (self.metric, *SHOWN)] or names[:4]
        rows = [{"fold": fold, "run_id": run.info.run_id, **{n: run.data.metrics[n] for n in names}}
                for fold, run in enumerate(runs)]
        footer = [{"fold": "mean ± std", "run_id": "", **{n: summaries[n].format(4) for n in names}}]
        columns = [text_column("fold", "fold"), text_column("run", lambda row: row["run_id"][:8]),
                   *(Column(n, n, lambda v: v if isinstance(v, str) else f"{v:.4f}") for n in shown)]
        overrides = " ".join(f"`{o}`" for o in self.train_overrides) or "none (the default job)"
        text = (f"Overrides: {overrides}; stratified folds of the training set by data.split_seed; test metrics on the "
                "whole test set.")
        return Report(f"{self.folds}-fold cross-validation",
                      [Section(text=text, table=Table("cv", columns, rows, footer=footer))],
                      figures=[box_plot(runs, [n for n in shown if not n.endswith("loss")] or shown, self.folds)],
                      metrics=metrics, name="cv")


def box_plot(runs: Sequence[Run], names: Sequence[str], folds: int) -> Figure:
    """One box per metric over the folds, each fold's value as a dot on it."""
    def draw():
        values = [[r.data.metrics[n] for r in runs] for n in names]
        fig, ax = figure(1.6 * len(names) + 2.5, 4)
        ax.boxplot(values, tick_labels=list(names))
        for i, column in enumerate(values, 1):
            ax.scatter([i] * len(column), column, color="tab:blue", zorder=3, s=14)
        ax.set_title(f"{folds}-fold cross-validation", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        return fig

    return Figure("cv.png", draw)


def run(job: Job) -> Report:
    return CrossValidation(job.cfg.folds, job.train_overrides, job.cfg.experiment, launcher=job.cfg.launcher).run()[1]


VERB = Verb("cv", __doc__, run, train_keys=("folds", "experiment", "launcher"), plain_keys=("experiment",),
            interrupted="finished folds are kept; re-run the same command to train the rest")
