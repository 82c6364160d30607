"""A published table (conf/table/NAME.yaml) for one budget, read and checked: its rows, each the overrides of
conf/train.yaml that define it, the published value and its source.

Overrides are applied in this order, later wins: the budget's (table-wide), the row's, the row's for this
budget, the command line's, then `seed` and the MLflow experiment (imgrec.verbs.reproduce).
"""

from dataclasses import dataclass

from omegaconf import DictConfig

from imgrec.errors import ConfigError
from imgrec.tables.report import UNITS, TableInfo

BUDGETS = ("paper", "quick", "smoke")
TABLE_TAG, ROW_TAG, BUDGET_TAG = "imgrec.table", "imgrec.row", "imgrec.budget"


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


@dataclass(frozen=True)
class Table:
    info: TableInfo
    budget_overrides: tuple[str, ...]
    rows: tuple[Row, ...]
    experiment: str
    cost: bool  # measure each row's network (imgrec.verbs.reproduce.measure_cost)


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
    picked = list(spec.entries) if spec.rows is None else [str(r) for r in spec.rows]
    unknown = [r for r in picked if r not in spec.entries]
    if unknown:
        raise ConfigError(f"table.rows: no row {', '.join(unknown)} in {where} (rows: {', '.join(spec.entries)})")
    rows = tuple(parse_row(row, spec.entries[row], spec, budget, where) for row in picked)
    metrics = ", ".join(dict.fromkeys(row.metric for row in rows)) or spec.metric  # rows may read other metrics
    info = TableInfo(name=name, title=spec.title, metric=metrics, unit=spec.unit, budget=budget,
                     budget_about=spec.budgets[budget].get("about", ""), seeds=spec.seeds,
                     published_on=spec.get("published_on"))
    return Table(info, tuple(str(o) for o in spec.budgets[budget].get("overrides") or []), rows, spec.experiment,
                 bool(spec.get("cost", False)))


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
    overrides = [*(entry.get("overrides") or []), *(budgets.get(budget) or [])]
    return Row(name=name, label=entry.label, published=None if published is None else float(published),
               source=entry.source, tolerance=float(entry.get("tolerance", spec.tolerance)), note=entry.get("note"),
               overrides=tuple(str(o) for o in overrides), skip=skip, metric=str(entry.get("metric", spec.metric)),
               year=entry.get("year"))
