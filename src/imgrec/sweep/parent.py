"""The study's MLflow parent run, under which every trial is a child run."""

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException


class ParentRun:
    """The study's MLflow parent run: one per (study, storage), found again by the study's user attr."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    @classmethod
    def create(cls, client: MlflowClient, experiment_id: str, name: str, tags: dict, params: dict) -> "ParentRun":
        from mlflow.entities import Param as MlflowParam

        run = client.create_run(experiment_id, run_name=name, tags=tags)
        client.log_batch(run.info.run_id, params=[MlflowParam(k, str(v)[:6000]) for k, v in params.items()])
        return cls(client, run.info.run_id)

    @staticmethod
    def find(client: MlflowClient, experiment_id: str, study_tag: str, storage_tag: str) -> str | None:
        runs = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`imgrec.study` = '{study_tag}' and tags.`imgrec.storage` = '{storage_tag}'",
            order_by=["attributes.start_time ASC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def usable(self) -> bool:
        try:
            return self.client.get_run(self.run_id).info.lifecycle_stage == "active"
        except MlflowException:  # deleted for good, or another tracking server
            return False

    def child(self, trial_number: int) -> str | None:
        """The run of trial `trial_number` (found by its tags: train() does not hand its run id back on errors)."""
        if not hasattr(self, "_experiment_id"):
            self._experiment_id = self.client.get_run(self.run_id).info.experiment_id
        runs = self.client.search_runs(
            [self._experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}' and tags.`optuna.trial_number` = '{trial_number}'")
        return runs[0].info.run_id if runs else None

    def set_status(self, status: str) -> None:
        if status == "RUNNING":
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.client.set_terminated(self.run_id, status)
