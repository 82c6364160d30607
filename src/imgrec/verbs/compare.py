"""`imgrec compare runs=[<id>,...] [group_by=<key>] [metric=test/acc]`, or `experiment=<name> [filter="..."]`
instead of `runs`: is A really better than B?

Finished runs are grouped by `group_by`, a config key as written in an override (`model`, `optimizer`,
`optimizer.lr`; `recipe`: the seeds of one config); without it every run is its own group. Per group: n, mean, std,
a 95% interval (Student t, or `interval=bootstrap`), and the `curve` metric (val/acc) at its best epoch and its last.
Between every two groups, the test that fits (`test=auto`): McNemar's exact test on the per-example test
predictions of two single runs; the paired t-test when the groups ran the same seeds (or `test=wilcoxon`);
otherwise Welch's t-test. With more than two groups the p-values are Holm-adjusted. Each pair gets an effect size
and a verdict that says "better" only when p < alpha. Also: the params that differ between the groups, their
learning curves overlaid (mean, ± std band) and their confusion matrices side by side.

Writes outputs/compare/<driver run id>/: report.md, report.tex (booktabs), groups.csv, pairs.csv, params.csv,
curves.png, confusion.png; all logged to that driver run (role `compare`). `filter` takes the syntax of the MLflow
UI's search box: "params.`data.name` = 'mnist'".
"""

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from imgrec import console, stats
from imgrec.data import catalog
from imgrec.errors import ConfigError
from imgrec.jobs import Job, Verb
from imgrec.report import Column, Figure, Report, Section, Table, figure, text_column
from imgrec.tracking import predictions
from imgrec.tracking.driver_run import ROLE_TAG, DriverRun
from imgrec.tracking.identity import RECIPE_HASH_TAG, choice_tag
from imgrec.tracking.query import experiment_ids, find_runs, recipe_params
from imgrec.tracking.store import open_store

TESTS = ("auto", *stats.TESTS)
PERCENT_METRICS = ("acc", "accuracy", "precision", "recall", "f1")  # shown as percentage points
MAX_PARAMS = 8
MAX_GROUPS = 20  # every pair is a test: 20 groups are 190 of them already


@dataclass
class Group:
    name: str
    runs: list[Run]
    values: list[float] = field(default_factory=list)
    summary: stats.Summary | None = None
    curves: list[list[float]] = field(default_factory=list)  # the `curve` metric per epoch, one list per run

    @property
    def seeds(self) -> list[str]:
        return [r.data.params.get("seed", "?") for r in self.runs]

    def by_seed(self) -> dict[str, float]:
        return dict(zip(self.seeds, self.values))


# -- selecting and grouping ------------------------------------------------------------------------------

def check(job: Job) -> None:
    cfg = job.cfg
    for key, allowed in (("direction", ("maximize", "minimize")), ("test", TESTS), ("interval", stats.INTERVALS)):
        if cfg[key] not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {cfg[key]!r}")
    if not 0 < cfg.confidence < 1 or not 0 < cfg.alpha < 1:
        raise ConfigError(f"confidence and alpha must lie between 0 and 1, got {cfg.confidence} and {cfg.alpha}")
    if cfg.runs is not None and (cfg.experiment is not None or cfg.filter):
        raise ConfigError("give runs=[...] or experiment=/filter=, not both")


def as_list(value) -> list[str]:
    return [] if value is None else [str(value)] if isinstance(value, str | int) else [str(v) for v in value]


def select(client, cfg) -> list[Run]:
    """The runs named by id (each must exist and be FINISHED), or the finished training runs of the experiments."""
    if cfg.runs is not None:
        runs = []
        for run_id in as_list(cfg.runs):
            try:
                run = client.get_run(run_id)
            except MlflowException:
                raise ConfigError(f"runs: no run '{run_id}' in {cfg.logger.tracking_uri}") from None
            if run.info.status != "FINISHED":
                raise ConfigError(f"runs: run {run_id} is {run.info.status}; compare takes finished runs")
            runs.append(run)
        return runs
    try:
        ids = experiment_ids(client, as_list(cfg.experiment))
        found = find_runs(client, ids, status="FINISHED", filter_string=cfg.filter)
    except LookupError as err:
        raise ConfigError(str(err)) from None
    except MlflowException as err:
        raise ConfigError(f"filter {cfg.filter!r}: {err.message.splitlines()[0]}") from None
    return [r for r in found if RECIPE_HASH_TAG in r.data.tags]  # training runs, not drivers' runs


def label(run: Run) -> str:
    return f"{run.info.run_name or run.data.tags.get('mlflow.runName', 'run')} ({run.info.run_id[:8]})"


def group_value(run: Run, key: str) -> str | None:
    """The run's value of `key`: the option of a config group it chose (model=cnn), else its param."""
    if key == "recipe":
        return run.data.tags.get(RECIPE_HASH_TAG)
    return run.data.tags.get(choice_tag(key), run.data.params.get(key))


def grouped(runs: Sequence[Run], key: str | None) -> list[Group]:
    if key is None:
        return [Group(label(run), [run]) for run in runs]
    values = {run.info.run_id: group_value(run, key) for run in runs}
    lacking = [label(run) for run in runs if values[run.info.run_id] is None]
    if lacking:
        raise ConfigError(f"group_by={key}: {len(lacking)} of {len(runs)} runs have no such config key or option: "
                          f"{', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''}")
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        groups.setdefault(values[run.info.run_id], []).append(run)
    if key == "recipe":  # a hash means nothing to a reader: the first run's name
        return [Group(f"{members[0].info.run_name} ({value[:6]})", members) for value, members in groups.items()]
    return [Group(value, members) for value, members in groups.items()]


def same_dataset(runs: Sequence[Run]) -> str:
    datasets: dict[str, list[str]] = {}
    for run in runs:
        datasets.setdefault(run.data.params.get("data.name", "?"), []).append(label(run))
    if len(datasets) > 1:
        listed = "; ".join(f"{name}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                           for name, names in sorted(datasets.items()))
        raise ConfigError(f"the runs were trained on different datasets ({listed}): compare runs of one dataset "
                          "(filter=\"params.`data.name` = '...'\")")
    return next(iter(datasets))


def with_metric(groups: Sequence[Group], metric: str) -> None:
    lacking = [label(r) for g in groups for r in g.runs if metric not in r.data.metrics]
    if lacking:
        raise ConfigError(f"metric {metric}: {len(lacking)} runs lack it: {', '.join(lacking[:5])}"
                          f"{' ...' if len(lacking) > 5 else ''}")
    for group in groups:
        group.values = [r.data.metrics[metric] for r in group.runs]


# -- testing ---------------------------------------------------------------------------------------------

def shares_seeds(a: Group, b: Group) -> bool:
    return len(a.runs) >= 2 and len(set(a.seeds)) == len(a.seeds) and sorted(a.seeds) == sorted(b.seeds)


def test_for(a: Group, b: Group, asked: str) -> str:
    """The test `asked`, or under auto the one that fits; ConfigError when the groups cannot take it."""
    single = len(a.runs) == 1 and len(b.runs) == 1
    test = asked if asked != "auto" else "mcnemar" if single else "paired_t" if shares_seeds(a, b) else "welch"
    if test == "mcnemar" and not single:
        raise ConfigError(f"test=mcnemar compares two single runs; {a.name} has {len(a.runs)}, "
                          f"{b.name} {len(b.runs)}")
    if test in ("paired_t", "wilcoxon") and not shares_seeds(a, b):
        raise ConfigError(f"test={test} pairs runs by seed: {a.name} (seeds {', '.join(a.seeds)}) and {b.name} "
                          f"(seeds {', '.join(b.seeds)}) do not share at least two seeds, each run once")
    if test == "welch" and min(len(a.runs), len(b.runs)) < 2:
        small = a if len(a.runs) < 2 else b
        raise ConfigError(f"group {small.name} has one run; Welch's t-test needs at least two runs per group "
                          "(more seeds: seed=1,2,3 --multirun; or two single runs, compared by McNemar's test)")
    return test


def compared(a: Group, b: Group, test: str, cache: dict, client, confidence: float) -> stats.Comparison:
    if test == "mcnemar":
        pa, pb = (run_predictions(g.runs[0], cache, client) for g in (a, b))
        if pa.label.shape != pb.label.shape or not np.array_equal(pa.label, pb.label):
            raise ConfigError(f"{a.name} and {b.name} were tested on different test images "
                              f"({len(pa.label)} and {len(pb.label)}): McNemar's test needs the same ones")
        return stats.mcnemar(pa.correct, pb.correct, confidence)
    if test in ("paired_t", "wilcoxon"):
        seeds = sorted(a.by_seed())
        return stats.compare(test, [a.by_seed()[s] for s in seeds], [b.by_seed()[s] for s in seeds], confidence)
    return stats.compare(test, a.values, b.values, confidence)


def run_predictions(run: Run, cache: dict, client) -> predictions.Predictions:
    if run.info.run_id not in cache:
        cache[run.info.run_id] = predictions.of_run(client, run.info.run_id)
    found = cache[run.info.run_id]
    if found is None:
        raise ConfigError(f"run {label(run)} has no {predictions.FILE} (a run trained before imgrec kept its "
                          "per-example predictions, or not a classifier): McNemar's test needs them")
    return found


# -- the report ------------------------------------------------------------------------------------------

def run(job: Job) -> Report:
    cfg = job.cfg
    client = open_store(cfg.logger.tracking_uri)
    runs = select(client, cfg)
    if len(runs) < 2:
        where = f"runs={list(as_list(cfg.runs))}" if cfg.runs is not None else (
            f"experiment {cfg.experiment or '(any)'}" + (f" matching {cfg.filter!r}" if cfg.filter else ""))
        raise ConfigError(f"compare needs at least two finished runs; {where} gave {len(runs)}")
    dataset = same_dataset(runs)
    groups = grouped(runs, cfg.group_by)
    if len(groups) < 2:
        raise ConfigError(f"group_by={cfg.group_by}: all {len(runs)} runs fall into one group "
                          f"({groups[0].name}); nothing to compare")
    if len(groups) > MAX_GROUPS:
        raise ConfigError(f"{len(groups)} groups are too many to test pair by pair (at most {MAX_GROUPS}): group the "
                          "runs (group_by=model) or select fewer (runs=[...], filter=...)")
    with_metric(groups, cfg.metric)
    for group in groups:
        group.summary = stats.describe(group.values, cfg.confidence, cfg.interval)
    higher = cfg.direction == "maximize"
    groups.sort(key=lambda g: -g.summary.mean if higher else g.summary.mean)  # best first: pairs read "a vs b"
    pairs = list(itertools.combinations(groups, 2))
    tests = [test_for(a, b, cfg.test) for a, b in pairs]  # every bad pair refused before any run is opened
    cache: dict = {}
    comparisons = stats.adjust([compared(a, b, t, cache, client, cfg.confidence) for (a, b), t in zip(pairs, tests)])
    for group in groups:
        group.curves = [[m.value for m in sorted(client.get_metric_history(r.info.run_id, cfg.curve),
                                                 key=lambda m: m.step)] for r in group.runs]

    experiment = runs[0].info.experiment_id
    driver = DriverRun.create(client, experiment, f"compare-{cfg.group_by or 'runs'}",
                              {ROLE_TAG: "compare", "command": console.command_line()},
                              params={"metric": cfg.metric, "group_by": cfg.group_by, "runs": len(runs),
                                      "groups": len(groups), "test": cfg.test, "interval": cfg.interval})
    with driver.running():
        report = comparison_report(cfg, dataset, groups, pairs, comparisons, cache, client)
        report.publish(Path(cfg.paths.root) / "outputs" / "compare" / driver.run_id, driver)
    return report


def scale_of(metric: str, groups: Sequence[Group]) -> tuple[float, str]:
    """Accuracies and the like in percentage points; anything else in its own unit."""
    values = [v for g in groups for v in g.values]
    name = metric.rsplit("/", 1)[-1]  # test/acc, test/corruption_acc, fewshot/5way_5shot_acc, ...
    if (name in PERCENT_METRICS or name.endswith("_acc")) and all(0 <= v <= 1 for v in values):
        return 100.0, "pp"
    return 1.0, ""


def comparison_report(cfg, dataset: str, groups: Sequence[Group], pairs, comparisons, cache, client) -> Report:
    scale, unit = scale_of(cfg.metric, groups)
    level = f"{cfg.confidence * 100:g}%"
    group_rows = [group_row(g, cfg) for g in groups]
    shown = "{:.2f}" if scale != 1 else "{:.4f}"

    def in_unit(value):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else shown.format(
            value * scale)

    group_table = Table("groups", [
        text_column("group", "group"), Column("n", "n"), Column(f"mean{' (%)' if scale != 1 else ''}", "mean", in_unit),
        Column("std", "std", in_unit), Column(f"{level} CI", lambda r: interval_text(r, in_unit)),
        Column(f"best {cfg.curve} (epoch)", lambda r: best_text(r)), Column(f"last {cfg.curve}", "last", ".4f"),
        text_column("seeds", "seeds")], group_rows,
        caption=f"{cfg.metric} on {dataset} per group ({cfg.direction}); {level} intervals "
                f"({'Student t' if cfg.interval == 't' else 'percentile bootstrap'}).")
    pair_rows = [pair_row(a, b, c, cfg, scale, unit) for (a, b), c in zip(pairs, comparisons)]
    pair_table = Table("pairs", [
        text_column("a", "a"), text_column("b", "b"), Column(f"a - b{f' ({unit})' if unit else ''}", "diff",
                                                              lambda v: f"{v * scale:+.2f}"),
        Column(f"{level} CI", lambda r: f"[{r['ci_low'] * scale:+.2f}, {r['ci_high'] * scale:+.2f}]"),
        text_column("test", "test"), Column("p", "p_value", stats.format_p),
        Column("p (Holm)", "p_adjusted", stats.format_p), Column("effect", lambda r: effect_text(r))],
        pair_rows, caption=f"Every pair of groups: the difference of {cfg.metric}, the test, its p-value "
                           f"({'Holm-adjusted over ' + str(len(pairs)) + ' pairs' if len(pairs) > 1 else 'one pair'}).")
    params = differing_params(groups, cfg.params)
    sections = [
        Section(text=f"{sum(len(g.runs) for g in groups)} finished runs on {dataset} in {len(groups)} groups"
                     + (f" by `{cfg.group_by}`" if cfg.group_by else " (each run its own group)")
                     + f"; {cfg.metric}, {cfg.direction}.", table=group_table),
        Section("Is the difference real?", table=pair_table, bullets=[r["verdict"] for r in pair_rows],
                after=TEST_NOTE),
    ]
    if params:
        sections.append(Section("What differs between the groups", table=Table(
            "params", [text_column("group", "group"), *(text_column(p, p) for p in params)],
            [{"group": g.name, **{p: shared_value(g, p) for p in params}} for g in groups])))
    figures = [Figure("curves.png", lambda: curves_plot(groups, cfg.curve))]
    found = {g.name: [cache.get(r.info.run_id) or predictions.of_run(client, r.info.run_id) for r in g.runs]
             for g in groups}
    if all(p is not None for ps in found.values() for p in ps):
        figures.append(Figure("confusion.png", lambda: confusion_plot(groups, found, dataset)))
    return Report(f"Comparison of {cfg.metric}" + (f" by {cfg.group_by}" if cfg.group_by else ""), sections,
                  figures=figures, metrics={"significant_pairs": sum(c.p < cfg.alpha for c in comparisons)})


TEST_NOTE = ("Tests: McNemar's exact test for two single runs (their per-example test predictions); the paired "
             "t-test for groups that ran the same seeds; Welch's t-test otherwise. Effects: Hedges' g (Welch), d_z "
             "(paired), the rank-biserial correlation (Wilcoxon), the odds ratio of the discordant images "
             "(McNemar). A verdict says \"better\" only when the (adjusted) p-value is below alpha.")


def group_row(group: Group, cfg) -> dict:
    s = group.summary
    best_epoch, best, last = best_and_last(group.curves, cfg.direction == "maximize")
    return {"group": group.name, "n": s.n, "mean": s.mean, "std": s.std, "ci_low": s.ci_low, "ci_high": s.ci_high,
            "interval": s.interval, "best": best, "best_epoch": best_epoch, "last": last,
            "seeds": " ".join(group.seeds), "run_ids": " ".join(r.info.run_id for r in group.runs)}


def best_and_last(curves: Sequence[Sequence[float]], higher: bool) -> tuple[float | None, float | None, float | None]:
    """The group's mean curve: the epoch (1-based) where it is best, its value there, and at the last epoch."""
    mean = mean_curve(curves)[0]
    if len(mean) == 0:
        return None, None, None
    index = int(np.nanargmax(mean) if higher else np.nanargmin(mean))
    return index + 1, float(mean[index]), float(mean[-1])


def mean_curve(curves: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per epoch over the runs (runs of different lengths: over those that reached the epoch)."""
    length = max((len(c) for c in curves), default=0)
    grid = np.full((len(curves), length), np.nan)
    for i, curve in enumerate(curves):
        grid[i, :len(curve)] = curve
    if length == 0:
        return np.zeros(0), np.zeros(0)
    counts = (~np.isnan(grid)).sum(axis=0)
    mean = np.nansum(grid, axis=0) / counts
    spread = np.sqrt(np.nansum((grid - mean) ** 2, axis=0) / np.maximum(counts - 1, 1))
    return mean, np.where(counts > 1, spread, 0.0)


def interval_text(row, in_unit) -> str:
    return "-" if math.isnan(row["ci_low"]) else f"[{in_unit(row['ci_low'])}, {in_unit(row['ci_high'])}]"


def best_text(row) -> str:
    return "-" if row["best"] is None else f"{row['best']:.4f} ({row['best_epoch']})"


def effect_text(row) -> str:
    name = {"hedges_g": "g", "d_z": "d_z", "rank_biserial": "r", "odds_ratio": "OR"}[row["effect_name"]]
    return f"{name} = {row['effect']:.2f}"


def pair_row(a: Group, b: Group, c: stats.Comparison, cfg, scale: float, unit: str) -> dict:
    return {"a": a.name, "b": b.name, "n_a": c.n_a, "n_b": c.n_b, "mean_a": c.mean_a, "mean_b": c.mean_b,
            "diff": c.diff, "ci_low": c.ci_low, "ci_high": c.ci_high, "test": c.test, "p_value": c.p_value,
            "p_adjusted": c.p_adjusted, "effect": c.effect, "effect_name": c.effect_name,
            "verdict": stats.verdict(a.name, b.name, c, cfg.direction == "maximize", scale, unit, cfg.alpha,
                                     cfg.confidence)}


def shared_value(group: Group, key: str) -> str:
    values = {recipe_params(r).get(key, "") for r in group.runs}
    return values.pop() if len(values) == 1 else "varies"


def differing_params(groups: Sequence[Group], asked) -> list[str]:
    """The recipe params (not seed, not infrastructure) whose values differ between the groups."""
    if asked:
        return [str(p) for p in asked]
    keys = sorted({k for g in groups for r in g.runs for k in recipe_params(r)})
    return [k for k in keys if len({shared_value(g, k) for g in groups}) > 1][:MAX_PARAMS]


def curves_plot(groups: Sequence[Group], curve: str):
    fig, ax = figure(7, 4.4)
    for group in groups:
        mean, spread = mean_curve(group.curves)
        if len(mean) == 0:
            continue
        epochs = np.arange(1, len(mean) + 1)
        line, = ax.plot(epochs, mean, marker="o", markersize=3, label=f"{group.name} (n={len(group.runs)})")
        if len(group.runs) > 1:
            ax.fill_between(epochs, mean - spread, mean + spread, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(curve)
    ax.set_title(f"{curve} per epoch: mean over each group's runs, ± std band", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def confusion_plot(groups: Sequence[Group], found: dict, dataset: str):
    """Each group's confusion matrix (its runs' predictions pooled), rows normalized to the true class."""
    try:
        names = [str(n) for n in catalog.get_spec(dataset).class_names]
    except (KeyError, ValueError, ConfigError):
        names = []
    k = max(int(max(p.label.max(), p.pred.max())) + 1 for ps in found.values() for p in ps)
    names = names if len(names) == k else [str(i) for i in range(k)]
    fig, axes = figure(4.2 * len(groups), 4.4, ncols=len(groups), squeeze=False)
    for ax, group in zip(axes[0], groups):
        counts = sum(p.confusion(k) for p in found[group.name])
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(f"{group.name}\naccuracy {np.trace(counts) / max(counts.sum(), 1):.4f}", fontsize=9)
        ax.set_xticks(range(k), names if k <= 20 else [], rotation=90, fontsize=7)
        ax.set_yticks(range(k), names if k <= 20 else [], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    return fig


VERB = Verb("compare", __doc__, run, check=check, plain_keys=("experiment",),
            choices={"direction": ("maximize", "minimize"), "test": TESTS, "interval": stats.INTERVALS})
