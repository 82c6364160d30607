"""Runs a driver opens itself, not through Lightning: the parent run that groups a sweep's or a table's runs
(found again by its tags), or the child run a verb logs under the run of the model it used. Their lifecycle is
the one training runs have (imgrec.tracking.run.lifecycle)."""

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from imgrec.tracking.query import find_runs
from imgrec.tracking.run import experiment_id, lifecycle

PARENT_TAG, SOURCE_RUN_TAG, ROLE_TAG = "mlflow.parentRunId", "imgrec.source_run", "imgrec.role"
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
MAX_PARAM = 6000  # MLflow's limit on a param value


class DriverRun:
    """One MLflow run with its lifecycle: RUNNING while `running()` lasts, then a final status."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    @classmethod
    def create(cls, client: MlflowClient, experiment_id: str, name: str, tags: Mapping[str, str],
               params: Mapping[str, Any] | None = None) -> "DriverRun":
        run = cls(client, client.create_run(experiment_id, run_name=name, tags=dict(tags)).info.run_id)
        run.log(params=params)
        return run

    @classmethod
    def find_or_create(cls, client: MlflowClient, experiment_id: str, name: str, tags: Mapping[str, str],
                       extra_tags: Mapping[str, str] | None = None,
                       params: Mapping[str, Any] | None = None) -> "DriverRun":
        """The first (oldest) run with `tags`, the one every later invocation keeps using; created (with
        `extra_tags` and `params` too) the first time."""
        found = find_runs(client, experiment_id, tags, newest_first=False, limit=1)
        if found:
            return cls(client, found[0].info.run_id)
        return cls.create(client, experiment_id, name, {**tags, **(extra_tags or {})}, params)

    @classmethod
    def child_of(cls, client: MlflowClient, source_run_id: str | None, name: str, tags: Mapping[str, str],
                 params: Mapping[str, Any] | None = None, experiment_name: str = "imgrec") -> "DriverRun":
        """A new run under `source_run_id` (in its experiment); without a source run, a top-level run."""
        if not source_run_id:
            return cls.create(client, experiment_id(client, experiment_name), name, tags, params)
        tags = {PARENT_TAG: source_run_id, SOURCE_RUN_TAG: source_run_id, **tags}
        return cls.create(client, client.get_run(source_run_id).info.experiment_id, name, tags, params)

    @property
    def experiment_id(self) -> str:
        return self.client.get_run(self.run_id).info.experiment_id

    def usable(self) -> bool:
        try:
            return self.client.get_run(self.run_id).info.lifecycle_stage == "active"
        except MlflowException:  # deleted for good, or another tracking server
            return False

    def log(self, metrics: Mapping[str, float] | None = None, files: Sequence[Path | str] = (),
            params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
            note: str | None = None, step: int = 0) -> None:
        """Metrics (at `step`; non-finite ones left out), params and tags in one batch, then files (as artifacts);
        `note`: the run's description."""
        now = int(time.time() * 1000)
        tags = {**(tags or {}), **({NOTE_TAG: note} if note is not None else {})}
        metrics = {k: float(v) for k, v in (metrics or {}).items() if v is not None and math.isfinite(float(v))}
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()],
                              params=[Param(k, str(v)[:MAX_PARAM]) for k, v in (params or {}).items()],
                              tags=[RunTag(k, str(v)) for k, v in tags.items()])
        for path in files:
            self.client.log_artifact(self.run_id, str(path))

    @contextmanager
    def running(self) -> Iterator["DriverRun"]:
        """RUNNING while the block runs; then FINISHED, FAILED, or KILLED (Ctrl-C, SIGTERM): never left RUNNING."""
        with lifecycle(self.client, self.run_id):
            yield self
