"""The run's MLflow model (the UI's Model column, `models:/<model id>`): a callback in conf/callbacks/default.yaml."""

import lightning as L

from imgrec.tasks.classification import ClassificationTask


class LoggedModel(L.Callback):
    """When fitting ends, logs the best checkpoint as the run's MLflow pyfunc model (imgrec.deploy.pyfunc):
    classifiers only, rank zero only, and only when the logger keeps models (`logger.log_model`)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger, checkpoint = trainer.logger, trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint else ""
        if not (trainer.is_global_zero and best and isinstance(pl_module, ClassificationTask)
                and getattr(logger, "keeps_models", False) and pl_module.net_spec):
            return
        spec = pl_module.net_spec
        args = (logger.run_id, logger.tracking_uri, best, list(spec["in_shape"]), list(spec["class_names"]))
        writer = logger.experiment
        if hasattr(writer, "defer"):  # a remote server, which may be away: queued with the run's other writes
            writer.defer("log_run_model", *args)
            return
        from imgrec.deploy.pyfunc import log_run_model  # MLflow's pyfunc and pandas: only when a model is logged

        log_run_model(*args)
