"""Runs a driver opens itself, not through Lightning: the parent run that groups a sweep's or a table's runs
(found again by its tags), or the child run a script logs under the run of the model it used."""

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from imgrec.tracking.run import sigterm_as_interrupt
from imgrec.tracking.store import heartbeat, process_tags


def tag_filter(tags: dict[str, str]) -> str:
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


class DriverRun:
    """One MLflow run with its lifecycle: RUNNING while `running()` lasts, then a final status."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    @classmethod
    def create(cls, client: MlflowClient, experiment_id: str, name: str, tags: dict[str, str],
               params: dict[str, Any] | None = None) -> "DriverRun":
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        if params:
            client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        return cls(client, run.info.run_id)

    @staticmethod
    def find(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> str | None:
        """The first (oldest) run with all of `tags`: the one every later invocation keeps using."""
        runs = client.search_runs([experiment_id], tag_filter(tags), order_by=["attributes.start_time ASC"],
                                  max_results=1)
        return runs[0].info.run_id if runs else None

    @classmethod
    def find_or_create(cls, client: MlflowClient, experiment_id: str, name: str, tags: dict[str, str],
                       extra_tags: dict[str, str] | None = None, params: dict[str, Any] | None = None) -> "DriverRun":
        """The run with `tags`, created (with `extra_tags` and `params` too) the first time."""
        found = cls.find(client, experiment_id, tags)
        return cls(client, found) if found else cls.create(client, experiment_id, name, {**tags, **(extra_tags or {})},
                                                           params)

    @classmethod
    def child_of(cls, client: MlflowClient, source_run_id: str | None, name: str, tags: dict[str, str],
                 params: dict[str, Any] | None = None, experiment_name: str = "imgrec") -> "DriverRun":
        """A new run under `source_run_id` (in its experiment); without a source run, a top-level run."""
        if source_run_id:
            experiment_id = client.get_run(source_run_id).info.experiment_id
            tags = {"mlflow.parentRunId": source_run_id, "imgrec.source_run": source_run_id, **tags}
        else:
            experiment = client.get_experiment_by_name(experiment_name)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
        return cls.create(client, experiment_id, name, tags, params)

    def usable(self) -> bool:
        try:
            return self.client.get_run(self.run_id).info.lifecycle_stage == "active"
        except MlflowException:  # deleted for good, or another tracking server
            return False

    def child(self, tags: dict[str, str]) -> str | None:
        """The latest child run with `tags` (found by them: train() does not hand its run id back on errors)."""
        experiment_id = self.client.get_run(self.run_id).info.experiment_id
        runs = self.client.search_runs([experiment_id], tag_filter({"mlflow.parentRunId": self.run_id, **tags}),
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def log(self, metrics: dict[str, float] | None = None, files: Sequence[Path | str] = ()) -> None:
        """Metrics (one batch) and files (as artifacts) of what a driver measured and wrote."""
        if metrics:
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for path in files:
            self.client.log_artifact(self.run_id, str(path))

    def set_status(self, status: str) -> None:
        if status == "RUNNING":
            self.client.update_run(self.run_id, status="RUNNING")
            for key, value in process_tags().items():  # this process owns it now (imgrec.tracking.store)
                self.client.set_tag(self.run_id, key, value)
        else:
            self.client.set_terminated(self.run_id, status)

    @contextmanager
    def running(self) -> Iterator[None]:
        """RUNNING while the block runs; then FINISHED, FAILED, or KILLED (Ctrl-C, SIGTERM): never left RUNNING."""
        self.set_status("RUNNING")
        status = "FAILED"
        try:
            with sigterm_as_interrupt(), heartbeat(self.client, self.run_id):
                yield
            status = "FINISHED"
        except (KeyboardInterrupt, SystemExit):
            status = "KILLED"
            raise
        finally:
            self.set_status(status)
