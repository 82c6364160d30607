"""`imgrec serve model=models:/<name>@<alias> [port=5001] [host=127.0.0.1]`: an HTTP endpoint for a trained model.

MLflow's model server (`mlflow models serve --env-manager local`: this environment, nothing downloaded) on the
model's pyfunc (imgrec.deploy.pyfunc): POST /invocations with {"inputs": N x C x H x W floats in [0, 1]} answers
one row per image, each class's probability and `pred`, the most probable class. The model is a registered
one (`imgrec export model=runs:/<id> register=NAME` makes one), a version, or runs:/<run_id>: the MLflow model
every classifier run logs. It runs until Ctrl-C.
"""

import os
import shutil
import sys
from pathlib import Path

from imgrec.errors import ConfigError
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
    cfg = job.cfg
    uri = served_uri(str(cfg.model), cfg.logger.tracking_uri)
    bin_dir = Path(sys.executable).parent  # mlflow starts uvicorn from PATH, as in an activated venv
    mlflow = shutil.which("mlflow", path=str(bin_dir)) or "mlflow"
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.logger.tracking_uri,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    command = [mlflow, "models", "serve", "-m", uri, "--env-manager", "local", "-h", str(cfg.host), "-p", str(cfg.port)]
    print(f"serving {cfg.model} ({uri}) at http://{cfg.host}:{cfg.port}/invocations; Ctrl-C stops it", flush=True)
    os.execve(mlflow, command, env)  # the server becomes this process: Ctrl-C and SIGTERM reach it directly


VERB = Verb("serve", __doc__, run, takes_model=True, loads_model=False, interrupted="the server stopped")
