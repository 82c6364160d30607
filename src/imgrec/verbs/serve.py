"""`imgrec serve model=models:/<name>@<alias> [port=5001] [host=127.0.0.1] [max_body_mb=10] [precision=auto]`: an
HTTP endpoint for a trained model.

MLflow's model server (its scoring app, as `mlflow models serve --env-manager local` runs it: this environment,
nothing downloaded) on the model's pyfunc (imgrec.deploy.pyfunc): POST /invocations with {"inputs": N x C x H x W
floats in [0, 1]} answers one row per image, each class's probability and `pred`, the most probable class. Bad
requests get a 4xx and one line before the model sees them (imgrec.deploy.server: a body above max_body_mb, a
wrong shape, an empty batch, strings, NaN, values outside [0, 1]), and the server answers the next. The model is a
registered one (`imgrec export model=runs:/<id> register=NAME` makes one), a version, or runs:/<run_id>: the
MLflow model every classifier run logs. It runs until Ctrl-C. `precision=auto` (the default) runs a request's batch
in bf16 autocast only from the batch size where bf16 measured faster than fp32 at start-up (imgrec.inference_precision).
"""

from imgrec.errors import ConfigError
from imgrec.inference_precision import PRECISIONS
from imgrec.inference_precision import check as check_precision
from imgrec.jobs import Job, Verb


def served_uri(uri: str, tracking_uri: str) -> str:
    """What MLflow's server takes: models:/ as it is; runs:/<id> as the MLflow model that run logged."""
    if uri.startswith("models:/"):
        return uri
    if uri.startswith("runs:/"):
        from mlflow.exceptions import MlflowException

        from imgrec.tracking.store import open_store

        run_id = uri.removeprefix("runs:/").strip("/")
        try:
            outputs = open_store(tracking_uri).get_run(run_id).outputs
        except MlflowException as err:
            raise ConfigError(f"model: cannot resolve {uri!r} in {tracking_uri}: "
                              f"{err.message.splitlines()[0]}") from None
        models = [m.model_id for m in (outputs.model_outputs if outputs else [])]
        if not models:
            raise ConfigError(f"model: run {run_id} logged no MLflow model (trained with logger.log_model=false?); "
                              "register its checkpoint with imgrec export model=runs:/<id> register=NAME")
        return f"models:/{models[0]}"
    raise ConfigError(f"model: serve takes models:/<name>@<alias>, models:/<name>/<version> or runs:/<run_id>, got "
                      f"{uri!r}; a checkpoint file is registered first: imgrec export model=<path> register=NAME")


def run(job: Job) -> None:
    import mlflow

    from imgrec.deploy.server import serve

    cfg = job.cfg
    if not isinstance(cfg.max_body_mb, (int, float)) or cfg.max_body_mb <= 0:
        raise ConfigError(f"max_body_mb: the largest request body in MB, a positive number, got {cfg.max_body_mb!r}")
    precision = check_precision(str(cfg.precision))
    uri = served_uri(str(cfg.model), cfg.logger.tracking_uri)
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    print(f"serving {cfg.model} ({uri}) at http://{cfg.host}:{cfg.port}/invocations; Ctrl-C stops it", flush=True)
    serve(uri, str(cfg.host), int(cfg.port), float(cfg.max_body_mb), precision)


VERB = Verb("serve", __doc__, run, takes_model=True, loads_model=False, interrupted="the server stopped",
            choices={"precision": PRECISIONS})
