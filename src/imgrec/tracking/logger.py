"""Lightning's MLflow logger as imgrec's training runs use it (conf/logger/mlflow.yaml)."""

from pathlib import Path

from lightning.pytorch.loggers import MLFlowLogger


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger, except that it never ends the run: Lightning would mark it FINISHED when
    `fit` returns, before the test, so a crash during the test would leave a FINISHED run without test
    metrics. imgrec.tracking.run.tracked_run gives the run its final status instead; here only the checkpoints are
    logged. While the run is tracked, its writes go through `writer` (imgrec.tracking.spool: queued for a remote
    server, which may go away; `offline_wait_s`: how long the run's end waits for it before spooling)."""

    def __init__(self, *args, offline_wait_s: float = 30.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.offline_wait_s, self.writer = offline_wait_s, None

    @property
    def experiment(self):
        client = super().experiment
        return client if self.writer is None else self.writer

    def finalize(self, status: str = "success") -> None:
        if self._initialized and self._checkpoint_callback:
            self._scan_and_log_checkpoints(self._checkpoint_callback)

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    def keeps_models(self) -> bool:
        """logger.log_model: the best checkpoint becomes an artifact, and a classifier's the run's MLflow model."""
        return bool(self._log_model)

    def log_file(self, path: Path, folder: str | None = None) -> None:
        """A file the run keeps (a task's picture, a report): how tasks log files without knowing MLflow."""
        self.experiment.log_artifact(self.run_id, str(path), folder)
