"""`imgrec reproduce table=NAME [budget=quick|paper|smoke] [table.seeds=N] [table.rows=[a,b]] [training overrides]`:
a published table, reproduced: our runs beside the paper's numbers.

A table (conf/table/NAME.yaml) lists rows: each the overrides of conf/train.yaml that define it, the published
value and its source. Every row x seed (seeds 0..N-1) is one training run, tracked in MLflow experiment `tables`
and tagged with the table, row, budget and config hash; a finished run with the same tags and hash is reused
instead of trained again, so a table fills up over several invocations, days or machines, and budgets never mix.
The budget is `quick` unless asked: a documented shorter protocol, minutes per row on a CPU; `paper` is the
published protocol (hours per row on a CPU). The table (Markdown, CSV, LaTeX) and a PNG of ours beside theirs go
to outputs/tables/ and to the table's parent run. A table with `cost: true` also measures what each row's
trained network costs (parameters, MFLOPs, training img/s, batch-1 CPU latency) and plots accuracy against MFLOPs.
A table's prerequisites (runs its rows build on, such as a pretrained autoencoder) are trained, or reused, once
per seed before the first row that names them.
"""

import dataclasses
import logging
import time
from pathlib import Path

from imgrec import config, launch
from imgrec.errors import DataFileError, DataNotFoundError, one_line
from imgrec.jobs import Job, TrainJob, Verb, reuse_or_train
from imgrec.report import Report
from imgrec.robust.corruption_eval import relative_to
from imgrec.tables.report import UNITS, RowResult, table_report
from imgrec.tables.spec import BUDGET_TAG, BUDGETS, DERIVED, ROW_TAG, RUN_OF, TABLE_TAG, Prerequisite, Row, load_table
from imgrec.tracking.driver_run import DriverRun
from imgrec.tracking.run import experiment_id
from imgrec.tracking.store import open_store

log = logging.getLogger(__name__)


def measure_cost(client, run_id: str, tracking_uri: str, mode: str = "eager", export: str | None = None,
                 calibration_images: int = 1000) -> dict[str, float]:
    """What the row's trained network costs: parameters and MFLOPs per image (imgrec.cost), and its batch-1 latency:
    eager: fp32 PyTorch on the CPU, with the training rate its run logged (imgrec.progress.EpochSummary);
    onnx: exported (as int8, calibrated on training images, with export=int8) and run by ONNX Runtime on one thread,
    with the file's size and the export's accuracy on the model's test split (`onnx_acc`)."""
    import tempfile

    from imgrec import cost, hub
    from imgrec.data.trained import datamodule_of
    from imgrec.deploy.export import onnx_profile
    from imgrec.jobs import trained_data_root

    model = hub.load_model(f"runs:/{run_id}", tracking_uri)
    net, spec = model.net, model.spec
    measured = {"params": float(cost.parameters(net)), "mflops": cost.mflops(net, spec.in_shape)}
    if mode == "eager":
        rate = client.get_run(run_id).data.metrics.get("perf/train_img_per_s")
        return {**measured, "latency_ms": cost.net_latency_ms(net, spec.in_shape),
                **({"train_img_per_s": rate} if rate is not None else {})}
    data = datamodule_of(spec, trained_data_root(spec, client, run_id))
    data.load()
    images, labels = data.test_pixels()
    calibration = data.train_sample(calibration_images).numpy() if export == "int8" else None
    with tempfile.TemporaryDirectory() as scratch:
        profile = onnx_profile(model, images.numpy(), labels.numpy(), Path(scratch), calibration)
    return {**measured, **profile}


class Reproduction:
    """One invocation: a job per row x seed (all composed now: a typo fails before any training), each reused
    or trained under the table's parent run, then the table written and logged."""

    def __init__(self, cfg, train_overrides: list[str]):
        self.table, self.launcher = load_table(cfg), cfg.launcher
        info = self.table.info
        self.user_overrides = train_overrides
        self.jobs = {(row.name, seed): self.job(row, seed) for row in self.table.rows if row.skip is None
                     for seed in range(row.seeds or info.seeds)}
        self.prerequisite_jobs = {(p.name, seed): self.job(p, seed) for p in self.table.prerequisites.values()
                                  for seed in range(info.seeds)}
        self.prerequisite_runs: dict[tuple[str, int], str] = {}  # (name, seed) -> its run id, once trained or found
        self.measured: dict[tuple[str, str | None], dict[str, float]] = {}  # (run id, export) -> measure_cost's
        base = config.compose(self.overrides(None, 0), "unused")
        self.info = dataclasses.replace(info, data=str(base.data.get("name", "")))  # what ours were trained on
        self.root = Path(base.paths.root)
        self.tracking_uri = base.logger.tracking_uri
        launch.check(self.launcher, self.tracking_uri)
        self.client = open_store(self.tracking_uri)
        self.experiment_id = experiment_id(self.client, self.table.experiment, base.logger.get("artifact_location"))

    def overrides(self, row: Row | Prerequisite | None, seed: int, runs: dict[str, str] | None = None) -> list[str]:
        """`runs`: prerequisite -> its run id, put in for the row's run:NAME values (left as they are without)."""
        own = [self.run_of(o, runs) for o in row.overrides] if row else []
        return [*self.table.budget_overrides, *own, *self.user_overrides, f"seed={seed}",
                f"logger.experiment_name={self.table.experiment}"]

    @staticmethod
    def run_of(override: str, runs: dict[str, str] | None) -> str:
        key, _, value = override.partition("=")
        if runs is None or not value.startswith(RUN_OF):
            return override
        return f"{key}=runs:/{runs[value.removeprefix(RUN_OF)]}"

    def job(self, row: Row | Prerequisite, seed: int, runs: dict[str, str] | None = None) -> TrainJob:
        """The row's (or prerequisite's) training run for `seed`. Composed without `runs` first, to check it."""
        info = self.table.info
        tags = {TABLE_TAG: info.name, ROW_TAG: row.name, BUDGET_TAG: info.budget}
        kind = "prerequisite" if isinstance(row, Prerequisite) else "row"
        # Reused by table and budget, not by row: rows that train the same config and read different metrics (clean
        # and robust accuracy of one model) share its runs.
        return TrainJob(self.overrides(row, seed, runs), name=f"{row.name}-seed{seed}",
                        what=f"{kind} {row.name} seed {seed} of table {info.name}", tags=tags,
                        reuse={TABLE_TAG: info.name, BUDGET_TAG: info.budget})

    def run_dir(self, name: str, seed: int) -> Path:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        return (self.root / "outputs" / "tables" / "runs" / f"{self.info.name}_{self.info.budget}"
                / f"{name}_seed{seed}_{stamp}")

    def row_job(self, row: Row, seed: int, parent_id: str) -> TrainJob:
        """The row's job, its prerequisites' runs (of this seed) trained or found first and put in."""
        if not row.needs:
            return self.jobs[(row.name, seed)]
        for name in row.needs:
            if (name, seed) not in self.prerequisite_runs:
                run = reuse_or_train(self.prerequisite_jobs[(name, seed)], self.client, self.run_dir(name, seed),
                                     parent_id, train=self.launcher.kind == "local")
                self.prerequisite_runs[(name, seed)] = run.info.run_id
        return self.job(row, seed, {name: self.prerequisite_runs[(name, seed)] for name in row.needs})

    def open_parent(self) -> DriverRun:
        """The table's parent run for this budget: found by its tags, created the first time."""
        return DriverRun.find_or_create(
            self.client, self.experiment_id, f"table-{self.info.name}-{self.info.budget}",
            {"imgrec.role": "table", TABLE_TAG: self.info.name, BUDGET_TAG: self.info.budget},
            extra_tags={"mlflow.note.content": f"{self.info.title}, budget {self.info.budget}"})

    def run_row(self, row: Row, parent_id: str) -> RowResult:
        result = RowResult(name=row.name, label=row.label, published=row.published, source=row.source,
                           tolerance=row.tolerance, note=row.note, year=row.year, series=row.series, x=row.x,
                           baseline=row.baseline)
        if row.skip:
            result.reason = f"not run: {row.skip}" if not row.skip.startswith("context") else row.skip
            return result
        failures, seeds = [], row.seeds or self.info.seeds
        for seed in range(seeds):
            try:
                run = reuse_or_train(self.row_job(row, seed, parent_id), self.client, self.run_dir(row.name, seed),
                                     parent_id, train=self.launcher.kind == "local")
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
            value = self.metric_of(row, run, seed)
            if value is None:
                failures.append(f"seed {seed}: run {run.info.run_id[:8]} did not log {row.metric}")
                continue
            result.values.append(UNITS[self.info.unit][0](value))
            result.run_ids.append(run.info.run_id)
            result.wall_s.append((run.info.end_time - run.info.start_time) / 1000)
            if "fit/epochs" in run.data.metrics:
                result.epochs.append(run.data.metrics["fit/epochs"])
        if failures:
            result.reason = f"{len(failures)} of {seeds} seeds failed"
            result.detail = "; ".join(failures)
        if self.table.cost and result.run_ids:
            result.cost = self.cost_of(result.run_ids[0], row.export)
        return result

    def cost_of(self, run_id: str, export: str | None) -> dict[str, float]:
        """measure_cost of a run (or its export), once per invocation: a model's rows share its runs."""
        if (run_id, export) not in self.measured:
            self.measured[(run_id, export)] = measure_cost(self.client, run_id, self.tracking_uri, self.table.cost,
                                                           export)
        return self.measured[(run_id, export)]

    def metric_of(self, row: Row, run, seed: int) -> float | None:
        """The row's metric of its run: logged, measured against its `versus` run of the same seed (DERIVED), or
        the accuracy of its export under ONNX Runtime."""
        if row.export is not None:
            return self.cost_of(run.info.run_id, row.export)["onnx_acc"]
        if row.metric not in DERIVED:
            return run.data.metrics.get(row.metric)
        versus = self.client.get_run(self.prerequisite_runs[(row.versus, seed)])
        return relative_to(run.data.metrics, versus.data.metrics).get(row.metric)

    def prerequisite_lines(self) -> list[str]:
        lines = []
        for p in self.table.prerequisites.values():
            runs = [run for (name, _), run in sorted(self.prerequisite_runs.items()) if name == p.name]
            if runs:
                lines.append(f"{p.name}: {p.label} (`{' '.join(p.overrides)}`); runs {', '.join(runs)}")
        return lines

    def train_on_launcher(self, parent_id: str) -> None:
        """launcher != local: every row and prerequisite trained on the launcher first (prerequisites, and rows that
        need none, then the rows built on them); the rows below then find their runs finished."""
        if self.launcher.kind == "local":
            return
        folder = self.root / "outputs" / "launch" / f"table-{self.info.name}-{self.info.budget}"
        first = [(job, self.run_dir(name, seed)) for (name, seed), job in self.prerequisite_jobs.items()]
        first += [(self.jobs[(row.name, seed)], self.run_dir(row.name, seed)) for row in self.table.rows
                  if row.skip is None and not row.needs for seed in range(row.seeds or self.info.seeds)]
        failed = launch.train_all(first, self.launcher, self.client, parent_id, folder)
        for (name, seed), job in self.prerequisite_jobs.items():
            run = job.finished_run(self.client)
            if run is not None:
                self.prerequisite_runs[(name, seed)] = run.info.run_id
        then = [(self.row_job(row, seed, parent_id), self.run_dir(row.name, seed)) for row in self.table.rows
                if row.skip is None and row.needs for seed in range(row.seeds or self.info.seeds)
                if all((n, seed) in self.prerequisite_runs for n in row.needs)]
        failed += launch.train_all(then, self.launcher, self.client, parent_id, folder)
        for line in failed:
            log.warning("launcher: %s", line)

    def run(self) -> Report:
        parent = self.open_parent()
        with parent.running():
            self.train_on_launcher(parent.run_id)
            results = [self.run_row(row, parent.run_id) for row in self.table.rows]
            report = table_report(self.info, results, self.prerequisite_lines())
            report.publish(self.root / "outputs" / "tables", parent)
            parent.log(tags={"imgrec.seeds": str(self.info.seeds)})
        return report


def run(job: Job) -> Report:
    return Reproduction(job.cfg, job.train_overrides).run()


VERB = Verb("reproduce", __doc__, run, train_keys=("table", "budget", "launcher"),
            required={"table": "a published table of conf/table/ ({})".format(", ".join(config.options("table")))},
            choices={"table": config.options("table"), "budget": BUDGETS},
            interrupted="finished rows are kept; re-run the same command to train the rest")
