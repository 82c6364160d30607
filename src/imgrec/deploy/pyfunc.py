"""An imgrec classifier as an MLflow pyfunc model, registered: `models:/<name>@<alias>` then works in
`mlflow models serve --env-manager local` and everywhere in imgrec (imgrec.hub finds the checkpoint inside).

The pyfunc takes float32 images in [0, 1], (N, C, H, W), and returns one row per image: the probability
of each class (a column per class name) and `pred`, the most probable class's name.
"""

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from imgrec.deploy.export import test_images


class ImageClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from imgrec.hub import load_model

        self.model = load_model(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        return probabilities(self.model, np.asarray(model_input, dtype=np.float32))


def probabilities(model, images: np.ndarray) -> pd.DataFrame:
    with torch.no_grad():
        probs = model(torch.from_numpy(images)).float().softmax(dim=1).numpy()
    names = list(model.class_names)
    frame = pd.DataFrame(probs.astype(np.float64), columns=names)
    frame["pred"] = [names[i] for i in probs.argmax(axis=1)]
    return frame


def signature(model) -> ModelSignature:
    # unnamed: `{"inputs": [...]}` then arrives as one array, not a dict of named tensors
    inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *model.spec.in_shape))])
    outputs = Schema([ColSpec("double", name) for name in model.class_names] + [ColSpec("string", "pred")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def register(job, name: str, alias: str | None) -> str:
    """Log the job's model as a pyfunc in a `register` child run, register it as `name`, point `alias` at it;
    returns `models:/<name>@<alias>` (or `/<version>`)."""
    from imgrec.hub import resolve_checkpoint

    model, cfg = job.model, job.cfg
    checkpoint = resolve_checkpoint(str(cfg.model), cfg.logger.tracking_uri)
    images, _ = test_images(model, cfg.data.root)
    tracked = job.child_run("register", {"model": cfg.model, "registered_model": name, "alias": alias})
    with tracked.running():
        mlflow.set_tracking_uri(cfg.logger.tracking_uri)
        mlflow.set_registry_uri(cfg.logger.tracking_uri)
        with mlflow.start_run(run_id=tracked.run_id):
            info = mlflow.pyfunc.log_model(
                name="model", python_model=ImageClassifier(), artifacts={"checkpoint": str(checkpoint)},
                signature=signature(model), input_example=images[:2],  # a batch of 2: the batch size stays free
                pip_requirements=[f"torch=={torch.__version__}", f"mlflow=={mlflow.__version__}", "imgrec"],
                registered_model_name=name)
        version = info.registered_model_version
        if alias:
            tracked.client.set_registered_model_alias(name, alias, version)
    uri = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
    print(f"registered {uri} (version {version}, MLflow run {tracked.run_id})")
    return uri
