"""Parent runs: one MLflow run that groups the runs of a sweep, a table or any driver, found again by its tags."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException

from imgrec.tracking.run import sigterm_as_interrupt
from imgrec.tracking.store import heartbeat, process_tags


def tag_filter(tags: dict[str, str]) -> str:
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


class ParentRun:
    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    @classmethod
    def create(cls, client: MlflowClient, experiment_id: str, name: str, tags: dict[str, str],
               params: dict[str, Any] | None = None) -> "ParentRun":
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
                       extra_tags: dict[str, str] | None = None, params: dict[str, Any] | None = None) -> "ParentRun":
        """The run with `tags`, created (with `extra_tags` and `params` too) the first time."""
        found = cls.find(client, experiment_id, tags)
        return cls(client, found) if found else cls.create(client, experiment_id, name, {**tags, **(extra_tags or {})},
                                                           params)

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
