"""A reproduced table as a researcher pastes it (an imgrec.report.Report: Markdown, CSV, LaTeX) with a PNG of ours
vs published.

Values are in the table's unit (accuracy, accuracy in %, error in %), as the source prints them. Rows whose
networks were measured (a table with `cost: true`) get cost columns and a second PNG: accuracy against
MFLOPs, one point per row, joined in the order of the rows' years. Rows that are points of a series (a table with
a `curve`) get a PNG of their values against x, one line per series.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imgrec import stats
from imgrec.report import Column, Figure, Report, Section, Table, figure, text_column
from imgrec.stats import Summary, describe

# How a run's accuracy (0-1) is written in each unit, and whether higher is better there.
UNITS: dict[str, tuple[Callable[[float], float], bool]] = {
    "accuracy": (lambda acc: acc, True),
    "accuracy_percent": (lambda acc: 100.0 * acc, True),
    "error_percent": (lambda acc: 100.0 * (1.0 - acc), False),
}


@dataclass
class RowResult:
    name: str
    label: str
    published: float | None
    source: str
    tolerance: float
    note: str | None = None
    values: list[float] = field(default_factory=list)  # ours, one per seed, in the table's unit
    epochs: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    reason: str | None = None  # why some or all seeds have no value, short: not run, data missing, failed
    detail: str | None = None  # the whole story (an error message), listed under the table
    year: int | None = None
    cost: dict[str, float] = field(default_factory=dict)  # imgrec.verbs.reproduce.measure_cost
    series: str | None = None  # the curve the row is a point of, at x
    x: float | None = None
    baseline: str | None = None  # the row this one is compared with (paired by seed), instead of a published value

    @property
    def ours(self) -> Summary:
        return describe(self.values)

    @property
    def difference(self) -> float | None:
        ours = self.ours
        return None if self.published is None or ours.n == 0 else ours.mean - self.published

    def difference_in(self, info: "TableInfo") -> float | None:
        """The difference to the published value, where the two were measured on the same data."""
        return None if not info.comparable else self.difference


@dataclass(frozen=True)
class TableInfo:
    name: str
    title: str
    metric: str
    unit: str
    budget: str
    budget_about: str
    seeds: int
    published_on: str | None = None  # the dataset of the published values, when the table says
    data: str = ""  # the dataset ours were trained and tested on
    curve_x: str | None = None  # what the rows' x means (the curve's axis), for tables whose rows form series
    log_x: bool = False

    @property
    def comparable(self) -> bool:
        return self.published_on is None or not self.data or self.published_on == self.data

    @property
    def higher_is_better(self) -> bool:
        return UNITS[self.unit][1]

    @property
    def digits(self) -> int:
        return 4 if self.unit == "accuracy" else 2


MIN_TESTED_SEEDS = 3  # below this many seeds a row is compared with the published value by `tolerance` only


def published_test(row: RowResult) -> stats.OneSample | None:
    """The one-sample t-test of the row's seeds against the published value, where it has enough of them."""
    if row.published is None or row.ours.n < MIN_TESTED_SEEDS:
        return None
    return stats.one_sample(row.values, row.published)


def verdict(row: RowResult, info: TableInfo, ref: str = "", alpha: float = stats.ALPHA) -> str:
    """What the row's seeds say about the published value: with 3 or more, a one-sample t-test ("consistent with the
    published value" unless p < alpha, then "below it" or "above it", with p); with fewer, no test: whether the
    mean lies within the table's tolerance, marked untested. Reasons (a shorter budget, a note) follow a shortfall."""
    if row.ours.n == 0:
        return row.reason or "no result"
    if row.published is None:
        return "no published value"
    if not info.comparable:
        return f"not comparable: published on {info.published_on}, ours on {info.data}"
    diff, tested = row.difference, published_test(row)
    if tested is not None:
        p = f"{stats.p_text(tested.p_value)}, one-sample t-test over {tested.n} seeds"
        if not tested.p_value < alpha:
            text = f"consistent with the published value ({p})"
        else:
            text = f"{'above' if diff > 0 else 'below'} it by {abs(diff):.{info.digits}f}, {p}"
        short = tested.p_value < alpha and (diff > 0) != info.higher_is_better
    else:
        seeds = f"{row.ours.n} seed{'s' if row.ours.n != 1 else ''}, untested"
        if abs(diff) <= row.tolerance:
            text = f"within ±{row.tolerance:g} of published ({seeds})"
        else:
            text = f"{'above' if diff > 0 else 'below'} published by {abs(diff):.{info.digits}f} ({seeds})"
        short = abs(diff) > row.tolerance and (diff > 0) != info.higher_is_better
    if short:
        reasons = [f"shorter protocol (budget={info.budget})"] if info.budget != "paper" else []
        reasons += [f"see note {ref}".strip()] if row.note else []
        if reasons:
            text += "; " + "; ".join(reasons)
    if row.reason:  # some seeds failed or are missing
        text += f" [{row.reason}]"
    return text


def against_baseline(row: RowResult, base: RowResult, info: TableInfo, alpha: float = stats.ALPHA) -> str:
    """What the row's seeds say against its baseline's, seed for seed: with 2 or more shared seeds a paired t-test
    (helps / hurts / no detectable difference, with the difference's 95% interval and p), with one the difference,
    untested; then its wall time as a multiple of the baseline's."""
    n = min(row.ours.n, base.ours.n)
    if n == 0:
        return row.reason or "no result"
    digits = info.digits
    if n >= 2:
        test = stats.paired_t(row.values[:n], base.values[:n])
        span = f"{test.diff:+.{digits}f} [{test.ci_low:+.{digits}f}, {test.ci_high:+.{digits}f}], {stats.p_text(test.p)}"
        better = (test.diff > 0) == info.higher_is_better
        text = (f"{'helps' if better else 'hurts'}: {span}" if test.p < alpha else
                f"no detectable difference: {span}") + f", paired t over {n} seeds"
    else:
        text = f"{row.values[0] - base.values[0]:+.{digits}f} (1 seed, untested)"
    if row.wall_s and base.wall_s:
        text += f"; {(sum(row.wall_s) / len(row.wall_s)) / (sum(base.wall_s) / len(base.wall_s)):.2f}x its wall time"
    return text + (f" [{row.reason}]" if row.reason else "")


def duration(seconds: Sequence[float]) -> str:
    if not seconds:
        return "-"
    mean = sum(seconds) / len(seconds)
    return f"{mean / 60:.1f} min" if mean >= 60 else f"{mean:.0f} s"


def epochs(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return f"{mean:.0f}" if abs(mean - round(mean)) < 0.05 else f"{mean:.2f}"


UNIT_LABELS = {"accuracy": "test accuracy", "accuracy_percent": "test accuracy (%)", "error_percent": "test error (%)"}
# The cost columns (key in RowResult.cost, header, format), after "ours", when any row was measured.
COST_COLUMNS = (("params", "params (M)", lambda v: f"{v / 1e6:.3f}"),
                ("mflops", "MFLOPs / image", lambda v: f"{v:,.1f}" if v < 100 else f"{v:,.0f}"),
                ("train_img_per_s", "training img/s", lambda v: f"{v:,.0f}"),
                ("latency_ms", "latency (ms, batch 1)", lambda v: f"{v:.2f}"),
                ("onnx_latency_ms", "ONNX Runtime latency (ms, batch 1)", lambda v: f"{v:.3f}"),
                ("onnx_mb", "ONNX file (MB)", lambda v: f"{v:.3f}"))
COST_NOTE = ("Cost of each trained network on this machine: parameters; MFLOPs of one forward pass on one image "
             "(torch.utils.flop_counter: 2 FLOPs per multiply-add); where shown, training img/s of the run's last "
             "epoch, the median batch-1 latency of eager fp32 PyTorch on the CPU, and the median batch-1 latency and "
             "file size of the ONNX export (int8 rows: quantized, static QDQ) run by ONNX Runtime on one thread.")


def has_cost(rows: Sequence[RowResult]) -> bool:
    return any(row.cost for row in rows)


def cost_columns(rows: Sequence[RowResult]):
    """The cost columns some row has a value of."""
    return tuple(c for c in COST_COLUMNS if any(c[0] in row.cost for row in rows))


def csv_row(info: TableInfo, number: int, row: RowResult, base: RowResult | None = None) -> dict:
    """The row's raw values (the CSV's columns), and what the shown columns need (label, summary); with `base`, the
    difference and verdict are against that row's."""
    ours, difference = row.ours, row.difference_in(info)
    if base is not None:
        difference = ours.mean - base.ours.mean if ours.n and base.ours.n else None
    tested = published_test(row) if info.comparable else None
    label = f"{row.label} ({row.year}) [{number}]" if row.year else f"{row.label} [{number}]"
    return {"table": info.name, "budget": info.budget, "row": row.name, "label": row.label, "unit": info.unit,
            "published": row.published, "ours_mean": None if ours.n == 0 else ours.mean, "ours_std": ours.std,
            "ci_low": ours.ci_low, "ci_high": ours.ci_high, "difference": difference,
            "p_value": None if tested is None else tested.p_value, "seeds": ours.n,
            "epochs": sum(row.epochs) / len(row.epochs) if row.epochs else None,
            "wall_s": sum(row.wall_s) / len(row.wall_s) if row.wall_s else None,
            "verdict": against_baseline(row, base, info) if base is not None else verdict(row, info, f"[{number}]"),
            "source": row.source, "run_ids": " ".join(row.run_ids), "baseline": row.baseline,
            "detail": row.detail, "year": row.year, **{key: row.cost.get(key) for key, _, _ in COST_COLUMNS},
            **({"series": row.series, "x": row.x} if row.series is not None else {}),
            "_shown": label, "_ours": ours.format(info.digits), "_epochs": epochs(row.epochs),
            "_wall": duration(row.wall_s),
            "_ci": "-" if math.isnan(ours.ci_low) else f"[{ours.ci_low:.{info.digits}f}, {ours.ci_high:.{info.digits}f}]"}


def table_report(info: TableInfo, rows: Sequence[RowResult], prerequisites: Sequence[str] = ()) -> Report:
    """The table (outputs/tables/<table>_<budget>.md, .tex, .csv), ours beside published (.png), for measured
    rows accuracy against MFLOPs (_cost.png), for rows in series their curves (_curve.png). `prerequisites`: a line
    on each run the rows built on."""
    digits = info.digits
    costs = cost_columns(rows)
    columns = [text_column("row", "_shown"), Column("published", "published", f".{digits}f"),
               Column("ours (mean ± std)", "_ours"), Column("95% CI", "_ci"),
               *(Column(title, key, show) for key, title, show in costs),
               Column("difference", "difference", f"+.{digits}f"), Column("seeds", "seeds"),
               Column("epochs", "_epochs"),
               Column("wall / run", "_wall"), text_column("verdict", "verdict")]
    named = {row.name: row for row in rows}
    data = [csv_row(info, number, row, named.get(row.baseline)) for number, row in enumerate(rows, 1)]
    baselines = {row.baseline for row in rows}
    for entry in data:
        if entry["row"] in baselines and entry["published"] is None and entry["seeds"]:
            entry["verdict"] = "the baseline: rows naming it are judged against it"
    better = "higher" if info.higher_is_better else "lower"
    on = f" (ours on {info.data}, published on {info.published_on})" if not info.comparable else ""
    caption = (f"{UNIT_LABELS[info.unit]} ({better} is better){on}; budget `{info.budget}`: {info.budget_about}; "
               f"{info.seeds} seed{'s' if info.seeds != 1 else ''} per row; 95% CI: Student t over the seeds; verdicts: " +
               ("against each row's baseline row, paired by seed (the difference, its 95% interval, p), and the wall "
                "time as a multiple of the baseline's." if any(r.baseline for r in rows) else
                f"a one-sample t-test against the published value where a row has {MIN_TESTED_SEEDS}+ seeds."))
    sources = "Sources:\n" + "\n".join(f"[{n}] {row.source}" + (f". Note: {row.note}" if row.note else "")
                                        for n, row in enumerate(rows, 1))
    details = [f"[{n}] {row.detail}" for n, row in enumerate(rows, 1) if row.detail]
    after = [*([COST_NOTE] if costs else []), sources,
             *(["Prerequisites (runs the rows build on):\n" + "\n".join(prerequisites)] if prerequisites else []),
             *(["Why rows have no or fewer results:\n" + "\n".join(details)] if details else [])]
    stem = f"{info.name}_{info.budget}"
    table = Table(stem, columns, data, caption=f"{info.title}: {caption}")
    figures = [Figure(f"{stem}.png", lambda: bars(info, rows))]
    if costs:
        figures.append(Figure(f"{stem}_cost.png", lambda: cost_plot(info, rows)))
    if info.curve_x and any(row.series is not None and row.x is not None for row in rows):
        figures.append(Figure(f"{stem}_curve.png", lambda: curve_plot(info, rows)))
    metrics = {f"ours/{row.name}": row.ours.mean for row in rows if row.ours.n}
    return Report(info.title, [Section(text=caption, table=table, after=after)], figures=figures, metrics=metrics,
                  name=stem)


def bars(info: TableInfo, rows: Sequence[RowResult]):
    """Horizontal bars: ours (mean, its 95% interval as error bars) beside the published value of each row."""
    fig, ax = figure(8, 0.5 * len(rows) + 1.5)
    ys = range(len(rows))
    height = 0.38
    published = [r.published if r.published is not None else math.nan for r in rows]
    ours = [r.ours for r in rows]
    ax.barh([y - height / 2 for y in ys], published, height, color="0.75", label="published")
    ax.barh([y + height / 2 for y in ys], [o.mean for o in ours], height,
            xerr=[[o.mean - o.ci_low for o in ours], [o.ci_high - o.mean for o in ours]],  # NaN for one seed: none
            color="tab:blue", capsize=3, label=f"ours ({info.budget}, 95% CI)")
    for y, row, summary in zip(ys, rows, ours):
        if summary.n == 0:
            what = "context" if (row.reason or "").startswith("context") else "not run"
            ax.text(0.01, y + height / 2, what, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    ax.set_yticks(list(ys), [r.label for r in rows], fontsize=8)
    ax.invert_yaxis()
    values = [v for v in published + [o.mean for o in ours] if not math.isnan(v)]
    if values:  # zoom in: the differences, not the bars' length, are the point
        low, high = min(values), max(values)
        margin = max(high - low, 1e-3) * 0.5
        ax.set_xlim(max(low - margin, 0.0), high + margin)
    ax.set_xlabel(f"{info.metric} as {info.unit}")
    ax.set_title(f"{info.title}\nbudget: {info.budget}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def cost_plot(info: TableInfo, rows: Sequence[RowResult]):
    """Accuracy against MFLOPs per image (log scale), one point per measured row, joined in year order:
    what each step of the history bought, and at what compute."""
    points = sorted(((r.year or 0, r.cost["mflops"], r.ours.mean, r.label) for r in rows
                     if "mflops" in r.cost and r.ours.n), key=lambda p: p[0])
    fig, ax = figure(7.5, 5)
    if points:
        ax.plot([p[1] for p in points], [p[2] for p in points], color="0.7", zorder=1, label="in order of year")
        ax.scatter([p[1] for p in points], [p[2] for p in points], color="tab:blue", zorder=2,
                   label=f"ours ({info.budget})")
        for year, flops, accuracy, label in points:
            ax.annotate(f"{label}" + (f" ({year})" if year else ""), (flops, accuracy), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("MFLOPs per image (log scale)")
    ax.set_ylabel(UNIT_LABELS[info.unit] + (f" on {info.data}" if info.data else ""))
    ax.set_title(f"{info.title}\nbudget: {info.budget}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def curve_plot(info: TableInfo, rows: Sequence[RowResult]):
    """Each series' values against x (ours: a line with 95% intervals; published values only: dashed), e.g.
    accuracy against labels per class, one line per method."""
    fig, ax = figure(7.5, 5)
    series = dict.fromkeys(r.series for r in rows if r.series is not None and r.x is not None)
    for name in series:
        points = sorted((r for r in rows if r.series == name and r.x is not None), key=lambda r: r.x)
        ours = [(r.x, r.ours) for r in points if r.ours.n]
        if ours:
            xs, summaries = [x for x, _ in ours], [o for _, o in ours]
            errors = [[0 if math.isnan(o.ci_low) else o.mean - o.ci_low for o in summaries],
                      [0 if math.isnan(o.ci_high) else o.ci_high - o.mean for o in summaries]]
            ax.errorbar(xs, [o.mean for o in summaries], yerr=errors, marker="o", capsize=3, label=name)
        published = [(r.x, r.published) for r in points if r.published is not None and not r.ours.n]
        if published:
            ax.plot(*zip(*published), linestyle="--", marker="s", alpha=0.7,
                    label=f"{name} (published{', ' + info.published_on if info.published_on else ''})")
    if info.log_x:
        ax.set_xscale("log")
    ax.set_xlabel(info.curve_x + (" (log scale)" if info.log_x else ""))
    ax.set_ylabel(UNIT_LABELS[info.unit] + (f" on {info.data}" if info.data else ""))
    ax.set_title(f"{info.title}\nbudget: {info.budget}; ours: mean and 95% CI over seeds", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig
