"""An imgrec classifier as an MLflow pyfunc model: `models:/<name>@<alias>` (registered by `imgrec export
register=NAME`) then works in `imgrec serve` (mlflow models serve --env-manager local) and everywhere in imgrec
(imgrec.hub finds the checkpoint inside).

The pyfunc takes float32 images in [0, 1], (N, C, H, W), and returns one row per image: the probability
of each class (a column per class name) and `pred`, the most probable class's name. It checks its input itself
(`pixel_problem`: the shape, NaN and infinity, the range), so that every MLflow serving path (`imgrec serve`,
`mlflow models serve`, a Docker image of it) answers a malformed body with a 4xx and one line, never a 500 or a
confident answer to values outside [0, 1]. Every classifier run
logs its best checkpoint this way too (`log_run_model`, through imgrec.deploy.logged_model with
logger.log_model=true): the run's Model column in the MLflow UI, `models:/<model id>` anywhere.
"""

import logging
import os
import warnings
from contextlib import contextmanager
from unittest import mock

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec


class ImageClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from imgrec.hub import load_model

        # imgrec serve passes its precision (default auto: bf16 only where it measured faster); others load fp32
        precision = (getattr(context, "model_config", None) or {}).get("precision", "32-true")
        self.model = load_model(context.artifacts["checkpoint"], precision=precision)

    # The type hint: MLflow asks every PythonModel for one (a warning at class definition without it).
    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            images = np.asarray(model_input, dtype=np.float32)
        except (ValueError, TypeError):
            raise MlflowException("inputs: numbers expected (strings, nulls or ragged lists found)",
                                  INVALID_PARAMETER_VALUE) from None
        problem = pixel_problem(images, self.model.spec.in_shape)
        if problem is not None:
            raise MlflowException(problem[1], INVALID_PARAMETER_VALUE)
        return probabilities(self.model, images)


def pixel_problem(images: np.ndarray, in_shape) -> tuple[int, str] | None:
    """(HTTP status, one line) of what is wrong with a batch for a model on N x C x H x W pixels in [0, 1]; None when
    nothing is. Refused, not clipped: a model trained on [0, 1] pixels answers anything else confidently and wrongly."""
    shape = " x ".join(map(str, in_shape))
    if images.size == 0:
        return 400, "inputs: an empty batch"
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(in_shape):
        return 422, f"inputs: shape {' x '.join(map(str, images.shape))}; this model takes N x {shape}"
    if not np.isfinite(images).all():
        return 400, "inputs: NaN or infinity found"
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        return 400, f"inputs: pixel values in [0, 1] expected, got values from {low:g} to {high:g}"
    return None


def probabilities(model, images: np.ndarray) -> pd.DataFrame:
    with torch.no_grad():
        probs = model(torch.from_numpy(images)).float().softmax(dim=1).numpy()
    names = list(model.class_names)
    frame = pd.DataFrame(probs.astype(np.float64), columns=names)
    frame["pred"] = [names[i] for i in probs.argmax(axis=1)]
    return frame


def signature(model) -> ModelSignature:
    return signature_of(model.spec.in_shape, model.class_names)


def signature_of(in_shape, class_names) -> ModelSignature:
    # unnamed: `{"inputs": [...]}` then arrives as one array, not a dict of named tensors
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *in_shape))])
    outputs = Schema([ColSpec("double", name) for name in class_names] + [ColSpec("string", "pred")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def requirements() -> list[str]:
    """Given, so that MLflow does not infer them in a subprocess (seconds per model)."""
    return [f"torch=={torch.__version__}", f"mlflow=={mlflow.__version__}", "imgrec"]


def log_run_model(run_id: str, tracking_uri: str, checkpoint: str, in_shape, class_names) -> str:
    """The run's best checkpoint as the run's MLflow model (a pyfunc with its signature; no input example, so
    nothing is run, and the requirements given, so none are inferred): about half a second. The run stays
    as it is (no fluent run is started and ended). Returns the model's `models:/<model id>` URI."""
    from mlflow.entities import LoggedModelOutput

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    model = mlflow.initialize_logged_model(name="model", source_run_id=run_id, experiment_id=run.info.experiment_id)
    with warnings.catch_warnings(), quiet_logger("mlflow.pyfunc"), \
            mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
        # What MLflow advises at every call, about choices made here on purpose: our own class, and no input
        # example (it would run the model; the signature is given).
        for advice in ("Passing a Python object as `python_model`", r".*An input example was not provided"):
            warnings.filterwarnings("ignore", message=advice)
        info = mlflow.pyfunc.log_model(name="model", python_model=ImageClassifier(), artifacts={"checkpoint": checkpoint},
                                       signature=signature_of(in_shape, class_names), pip_requirements=requirements(),
                                       model_id=model.model_id)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return info.model_uri


@contextmanager
def quiet_logger(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
