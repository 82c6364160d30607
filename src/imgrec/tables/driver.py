"""One invocation of `python scripts/reproduce.py table=NAME [budget=paper|quick|smoke] [overrides]`.

A table (conf/table/NAME.yaml, composed through conf/reproduce.yaml) lists rows: each the overrides of
conf/train.yaml that define it, the published value and its source. Every row x seed is one call of the
same `imgrec.train.train` as train.py, tracked as an MLflow run tagged with table, row, budget and its
config hash; a finished run with the same tags and hash is reused instead of trained again, so a table
fills up over several invocations, days or machines. The result goes to outputs/tables/ and to the
table's parent run (one per table and budget) as Markdown, CSV and a PNG. A table with `cost: true` also
measures what each row's trained network costs (imgrec.cost: parameters, MFLOPs, training img/s, batch-1
CPU latency) and plots accuracy against MFLOPs.

Overrides are applied in this order, later wins: the budget's (table-wide), the row's, the row's for
this budget, the command line's, then `seed` and the MLflow experiment.
"""

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run
from omegaconf import DictConfig

from imgrec import config, drivers
from imgrec.config import CONF_DIR, save_hydra_files
from imgrec.errors import ConfigError, DataFileError, DataNotFoundError, ImgrecError, one_line
from imgrec.progress import log_to_file
from imgrec.tables import report
from imgrec.tables.report import UNITS, RowResult, TableInfo
from imgrec.tracking import run as tracking
from imgrec.tracking.driver_run import DriverRun
from imgrec.tracking.identity import config_hash
from imgrec.tracking.store import open_store
from imgrec.train import train
from imgrec.validation import validate

log = logging.getLogger(__name__)

DRIVER_CONFIG = "reproduce"
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
    cost: bool  # measure each row's network: imgrec.tables.driver.measure_cost


# -- the table spec -------------------------------------------------------------------------------------

def load_table(driver_overrides: Sequence[str]) -> Table:
    """conf/table/NAME.yaml for one budget, checked: a mistake fails here, in one line, before any training."""
    with drivers.composing():
        cfg = config.compose_driver(DRIVER_CONFIG, driver_overrides)
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


def measure_cost(client, run_id: str, tracking_uri: str) -> dict[str, float]:
    """What the row's trained network costs: parameters, MFLOPs per image and batch-1 CPU latency of its
    checkpoint (imgrec.cost), and the training rate its run logged (imgrec.progress.EpochSummary)."""
    from imgrec import cost, hub

    net, spec = hub.load_net(f"runs:/{run_id}", tracking_uri)
    measured = {"params": float(cost.parameters(net)), "mflops": cost.mflops(net, spec.in_shape),
                "latency_ms": cost.net_latency_ms(net, spec.in_shape)}
    rate = client.get_run(run_id).data.metrics.get("perf/train_img_per_s")
    return {**measured, **({"train_img_per_s": rate} if rate is not None else {})}


# -- the driver -----------------------------------------------------------------------------------------

class Reproduction:
    """One invocation: compose every row, reuse or train each row x seed, write and log the table."""

    def __init__(self, argv: Sequence[str]):
        driver_overrides, self.user_overrides = drivers.split_overrides(argv, ("table", "budget"))
        self.table = load_table(driver_overrides)
        self.info = self.table.info
        # Every row x seed composes now: a typo in a row or on the command line fails before any training.
        self.configs = {(row.name, seed): self.compose(row, seed, Path("unused"))
                        for row in self.table.rows if row.skip is None for seed in range(self.info.seeds)}
        base = self.compose(None, 0, Path("unused"))
        self.info = dataclasses.replace(self.info, data=str(base.data.get("name", "")))  # what ours were trained on
        self.root = Path(base.paths.root)
        self.tracking_uri = base.logger.tracking_uri
        self.client = open_store(self.tracking_uri)
        self.experiment_id = tracking.experiment_id(self.client, self.table.experiment, base.logger.artifact_location)

    def overrides(self, row: Row | None, seed: int) -> list[str]:
        return [*self.table.budget_overrides, *(row.overrides if row else ()), *self.user_overrides,
                f"seed={seed}", f"logger.experiment_name={self.table.experiment}"]

    def compose(self, row: Row | None, seed: int, output_dir: Path) -> DictConfig:
        what = f"row {row.name} of table {self.info.name}" if row else f"table {self.info.name}"
        with drivers.composing(f"{what} does not compose with conf/train.yaml"):
            cfg = config.compose(self.overrides(row, seed), output_dir)
        try:
            validate(cfg)
        except ConfigError as err:
            raise ConfigError(f"{what}: {err}") from None
        return cfg

    # -- MLflow

    def tags(self, row: Row) -> dict[str, str]:
        return {TABLE_TAG: self.info.name, ROW_TAG: row.name, BUDGET_TAG: self.info.budget}

    def find_run(self, row: Row, config_id: str) -> Run | None:
        """The latest finished run of this table, budget and config (same hash = same resolved config). Not
        of this row only: rows that train the same config and read different metrics (clean and robust
        accuracy of one model) share its runs."""
        conditions = [f"tags.`{k}` = '{v}'" for k, v in self.tags(row).items() if k != ROW_TAG]
        conditions += [f"tags.`{tracking.CONFIG_HASH_TAG}` = '{config_id}'", "attributes.status = 'FINISHED'"]
        runs = self.client.search_runs([self.experiment_id], " and ".join(conditions), max_results=1,
                                       order_by=["attributes.start_time DESC"])
        return runs[0] if runs else None

    def open_parent(self) -> DriverRun:
        """The table's parent run for this budget: found by its tags, created the first time."""
        return DriverRun.find_or_create(
            self.client, self.experiment_id, f"table-{self.info.name}-{self.info.budget}",
            {"imgrec.role": "table", TABLE_TAG: self.info.name, BUDGET_TAG: self.info.budget},
            extra_tags={"mlflow.note.content": f"{self.info.title}, budget {self.info.budget}"})

    # -- rows

    def run_row(self, row: Row, parent_id: str) -> RowResult:
        result = RowResult(name=row.name, label=row.label, published=row.published, source=row.source,
                           tolerance=row.tolerance, note=row.note, year=row.year)
        if row.skip:
            result.reason = f"not run: {row.skip}" if not row.skip.startswith("context") else row.skip
            return result
        failures = []
        for seed in range(self.info.seeds):
            try:
                run = self.reuse_or_train(row, seed, parent_id)
            except (DataNotFoundError, DataFileError) as err:  # no data, no row: the rest of the table goes on
                log.warning("row %s: %s", row.name, one_line(err))
                result.reason, result.detail = "not run: data missing", one_line(err)
                return result
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as err:  # a failing row must not cost the other rows
                log.exception("row %s seed %d failed", row.name, seed)
                failures.append(f"seed {seed}: {type(err).__name__}: {one_line(err)}"[:500])
                continue
            if row.metric not in run.data.metrics:
                failures.append(f"seed {seed}: run {run.info.run_id[:8]} did not log {row.metric}")
                continue
            to_unit = UNITS[self.info.unit][0]
            result.values.append(to_unit(run.data.metrics[row.metric]))
            result.run_ids.append(run.info.run_id)
            result.wall_s.append((run.info.end_time - run.info.start_time) / 1000)
            if "fit/epochs" in run.data.metrics:
                result.epochs.append(run.data.metrics["fit/epochs"])
        if failures:
            result.reason = f"{len(failures)} of {self.info.seeds} seeds failed"
            result.detail = "; ".join(failures)
        if self.table.cost and result.run_ids:
            result.cost = measure_cost(self.client, result.run_ids[0], self.tracking_uri)
        return result

    def reuse_or_train(self, row: Row, seed: int, parent_id: str) -> Run:
        config_id = config_hash(self.configs[(row.name, seed)])
        run = self.find_run(row, config_id)
        if run is not None:
            log.info("row %s seed %d: reusing finished run %s", row.name, seed, run.info.run_id)
            return run
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        output_dir = self.root / "outputs" / "tables" / "runs" / f"{self.info.name}_{self.info.budget}" / f"{row.name}_seed{seed}_{stamp}"
        log.info("row %s seed %d: training (%s)", row.name, seed, " ".join(self.overrides(row, seed)))
        cfg = self.compose(row, seed, output_dir)
        with log_to_file(output_dir):
            save_hydra_files(cfg, self.overrides(row, seed), output_dir)
            tags = {**self.tags(row), "mlflow.parentRunId": parent_id, "mlflow.runName": f"{row.name}-seed{seed}"}
            train(cfg, tags=tags)
        run = self.find_run(row, config_id)
        if run is None:
            raise ImgrecError(f"the run of row {row.name} seed {seed} is not in MLflow with config hash {config_id}")
        return run

    # -- the table

    def publish(self, parent_id: str, results: Sequence[RowResult]) -> str:
        paths = report.write_all(self.root / "outputs" / "tables", self.info, results)
        for path in paths:
            self.client.log_artifact(parent_id, str(path))
        markdown = paths[0].read_text()
        self.client.set_tag(parent_id, "mlflow.note.content", markdown)
        self.client.set_tag(parent_id, "imgrec.seeds", str(self.info.seeds))
        for result in results:
            if result.ours.n:
                self.client.log_metric(parent_id, f"ours/{result.name}", result.ours.mean)
        log.info("table written to %s (MLflow parent run %s)", paths[0], parent_id)
        return markdown

    def run(self) -> str:
        parent = self.open_parent()
        with parent.running():
            results = [self.run_row(row, parent.run_id) for row in self.table.rows]
            return self.publish(parent.run_id, results)


USAGE = """usage: python scripts/reproduce.py table=NAME [budget=paper|quick|smoke] [train overrides] [table.KEY=VALUE]

  table=NAME        a published table in conf/table/ ({tables})
  budget=BUDGET     paper (default): the published protocol; quick: a shorter one for a CPU; smoke: a few steps
  train overrides   go to every row's run and win over the table's (trainer=gpu, data.root=...)
  table.seeds=N     runs per row (seeds 0..N-1); table.rows=[a,b] picks rows

Finished runs with the same table, row, budget and config hash are reused: re-running trains only what is missing."""


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: `python scripts/reproduce.py table=NAME [overrides]`."""
    usage = USAGE.format(tables=", ".join(sorted(p.stem for p in (CONF_DIR / "table").glob("*.yaml"))))
    drivers.main(lambda argv: print(Reproduction(argv).run()), argv, usage,
                 interrupted="finished rows are kept; re-run the same command to train the rest", required="table")
