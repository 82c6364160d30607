"""A published table (conf/table/NAME.yaml) for one budget, read and checked: its rows, each the overrides of
conf/train.yaml that define it, the published value and its source.

Overrides are applied in this order, later wins: the budget's (table-wide), the row's, the row's for this
budget, the command line's, then `seed` and the MLflow experiment (imgrec.verbs.reproduce).

A table may train `prerequisites`: runs that rows build on (an autoencoder whose encoder rows fine-tune), trained
once per seed with the budget's overrides and their own. A row names one's run as the value `run:NAME` of an
override (model.backbone.checkpoint=run:autoencoder); the driver puts in the run of the same seed. A row whose
metric is measured against another run (DERIVED: a corruption error relative to standard training) names that
prerequisite as `versus`. Rows with a
`series` and an `x` are also drawn as curves, one line per series (accuracy against labels per class, say); a row
with `shown_in` is part of the table under those budgets only. A table (or a row) with a `baseline` row compares each
row with it instead of a published value (paired by seed: which additions help, which hurt, at what cost in wall
time); a row's `seeds: {budget: N}` runs it with N seeds under that budget instead of the table's.
"""

from dataclasses import dataclass

from omegaconf import DictConfig

from imgrec.errors import ConfigError
from imgrec.tables.report import UNITS, TableInfo

BUDGETS = ("paper", "quick", "smoke")
TABLE_TAG, ROW_TAG, BUDGET_TAG = "imgrec.table", "imgrec.row", "imgrec.budget"
RUN_OF = "run:"  # an override value run:NAME stands for the run of prerequisite NAME, same seed
# Metrics a row computes from its run's metrics and those of its `versus` run (a prerequisite, same seed)
DERIVED = ("test/mce", "test/relative_mce")
COST_MODES = (None, "eager", "onnx")  # a table's `cost`: how each row's network is measured
EXPORTS = ("int8",)  # a row's `export`: the row is its runs' export, measured under ONNX Runtime


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    published: float | None
    source: str
    tolerance: float
    note: str | None
    overrides: tuple[str, ...]  # the row's own plus its overrides for this budget
    metric: str  # what the row reads from its runs: the table's metric unless the row names its own
    skip: str | None  # why this row is not run under this budget (a context row, too slow for it...)
    year: int | None  # when the row's method was published: the cost plot draws the history in this order
    series: str | None = None  # the curve the row is a point of (its method), at `x` (its number of labels)
    x: float | None = None
    versus: str | None = None  # the prerequisite a DERIVED metric is measured against
    export: str | None = None  # int8: the row is the int8 ONNX export of its runs (accuracy and cost measured on it)
    baseline: str | None = None  # the row it is compared with (paired by seed), where the table has no published values
    seeds: int | None = None  # this budget's seeds for the row (None: the table's)

    @property
    def needs(self) -> list[str]:
        """The prerequisites whose runs it uses: those its overrides name, and the one it is measured against."""
        named = [o.split("=", 1)[1].removeprefix(RUN_OF) for o in self.overrides if "=" in o
                 and o.split("=", 1)[1].startswith(RUN_OF)]
        return named + ([self.versus] if self.versus and self.versus not in named else [])


@dataclass(frozen=True)
class Prerequisite:
    name: str
    label: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    info: TableInfo
    budget_overrides: tuple[str, ...]
    rows: tuple[Row, ...]
    experiment: str
    cost: str | None  # measure each row's network: eager (PyTorch) or onnx (ONNX Runtime); None: not measured
    prerequisites: dict[str, Prerequisite]


def load_table(cfg: DictConfig) -> Table:
    """The table of a composed conf/verbs/reproduce.yaml, for its budget, checked: a mistake fails here, in one
    line, before any training."""
    name, spec, budget = cfg.hydra.runtime.choices.table, cfg.table, cfg.budget
    where = f"conf/table/{name}.yaml"
    for key in ("title", "metric", "unit", "tolerance", "budgets", "entries"):
        if spec.get(key) is None:
            raise ConfigError(f"table.{key} is not set in {where}")
    if spec.unit not in UNITS:
        raise ConfigError(f"table.unit must be one of {', '.join(UNITS)} in {where}, got {spec.unit!r}")
    if budget not in BUDGETS or budget not in spec.budgets:
        known = [b for b in BUDGETS if b in spec.budgets]
        raise ConfigError(f"budget must be one of {', '.join(known)} for table {name}, got {budget!r}")
    if not isinstance(spec.seeds, int) or spec.seeds < 1:
        raise ConfigError(f"table.seeds must be a positive integer, got {spec.seeds!r}")
    listed = [r for r in spec.entries if budget in (spec.entries[r].get("shown_in") or BUDGETS)]
    picked = listed if spec.rows is None else [str(r) for r in spec.rows]
    unknown = [r for r in picked if r not in spec.entries]
    if unknown:
        raise ConfigError(f"table.rows: no row {', '.join(unknown)} in {where} (rows: {', '.join(spec.entries)})")
    rows = [parse_row(row, spec.entries[row], spec, budget, where) for row in picked]
    wanted = [r.baseline for r in rows if r.baseline is not None and r.baseline not in picked]
    rows = tuple(parse_row(name, spec.entries[name], spec, budget, where) for name in dict.fromkeys(wanted)
                 if name in spec.entries) + tuple(rows)  # a row picked alone brings the row it is judged against
    prerequisites = {key: Prerequisite(key, str(entry.get("label", key)), tuple(str(o) for o in entry.overrides))
                     for key, entry in (spec.get("prerequisites") or {}).items()}
    for row in rows:
        missing = [n for n in row.needs if n not in prerequisites]
        if missing:
            raise ConfigError(f"table.entries.{row.name}: {RUN_OF}{missing[0]} names no prerequisite of {where} "
                              f"(prerequisites: {', '.join(prerequisites) or 'none'})")
        if row.baseline is not None and row.baseline not in {r.name for r in rows}:
            raise ConfigError(f"table.entries.{row.name}.baseline: no row {row.baseline!r} among this budget's rows")
        if (row.metric in DERIVED) != (row.versus is not None):
            raise ConfigError(f"table.entries.{row.name}: `versus: <prerequisite>` goes with a metric measured "
                              f"against another run ({', '.join(DERIVED)}), and only with one")
    metrics = ", ".join(dict.fromkeys(row.metric for row in rows)) or spec.metric  # rows may read other metrics
    curve = spec.get("curve") or {}
    info = TableInfo(name=name, title=spec.title, metric=metrics, unit=spec.unit, budget=budget,
                     budget_about=spec.budgets[budget].get("about", ""), seeds=spec.seeds,
                     published_on=spec.get("published_on"), curve_x=curve.get("x"), log_x=bool(curve.get("log_x")))
    cost = {True: "eager", False: None, None: None}.get(spec.get("cost"), spec.get("cost"))
    if cost not in COST_MODES:
        raise ConfigError(f"table.cost must be true (eager PyTorch), onnx or false in {where}, got {cost!r}")
    for row in rows:
        if row.export is not None and (row.export not in EXPORTS or cost != "onnx"):
            raise ConfigError(f"table.entries.{row.name}.export: {', '.join(EXPORTS)} in a table with cost: onnx, "
                              f"got {row.export!r}")
    return Table(info, tuple(str(o) for o in spec.budgets[budget].get("overrides") or []), rows, spec.experiment,
                 cost, prerequisites)


def parse_row(name: str, entry: DictConfig, spec: DictConfig, budget: str, where: str) -> Row:
    for key in ("label", "source"):
        if not entry.get(key):
            raise ConfigError(f"table.entries.{name}.{key} is not set in {where}")
    published = entry.get("published")
    if published is not None and not isinstance(published, (int, float)):
        raise ConfigError(f"table.entries.{name}.published must be a number or null, got {published!r}")
    context = entry.get("context")
    if not context and not entry.get("overrides"):
        raise ConfigError(f"table.entries.{name} needs overrides (what to train) or `context` (why it is only shown)")
    budgets = entry.get("budgets") or {}
    skip = ("context: " + context) if context else (entry.get("skip") or {}).get(budget)
    baseline = entry.get("baseline", spec.get("baseline"))
    seeds = (entry.get("seeds") or {}).get(budget)
    if seeds is not None and (not isinstance(seeds, int) or seeds < 1):
        raise ConfigError(f"table.entries.{name}.seeds.{budget} must be a positive integer, got {seeds!r}")
    overrides = [*(entry.get("overrides") or []), *(budgets.get(budget) or [])]
    return Row(name=name, label=entry.label, published=None if published is None else float(published),
               source=entry.source, tolerance=float(entry.get("tolerance", spec.tolerance)), note=entry.get("note"),
               overrides=tuple(str(o) for o in overrides), skip=skip, metric=str(entry.get("metric", spec.metric)),
               year=entry.get("year"), series=entry.get("series"), x=entry.get("x"), versus=entry.get("versus"),
               export=entry.get("export"), baseline=None if baseline == name else baseline, seeds=seeds)
