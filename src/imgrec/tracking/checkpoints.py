"""Find a checkpoint from a path, an MLflow run or a registered model, and rebuild its network.

    /path/to/epoch_003.ckpt      a file
    runs:/<run_id>               that run's best checkpoint
    models:/<name>@<alias>       a registered model version (registered from a run's checkpoint artifact)
"""

from pathlib import Path

import mlflow
import torch
from hydra.utils import instantiate
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from torch import nn

from imgrec.errors import ConfigError
from imgrec.tasks.base import NET_SPEC_KEY
from imgrec.tracking.run import BEST_CHECKPOINT_TAG


def resolve_checkpoint(uri: str, tracking_uri: str | None = None, key: str = "checkpoint") -> Path:
    """A local checkpoint file for `uri`; downloads MLflow artifacts when needed."""
    try:
        if uri.startswith("runs:/"):
            return _run_checkpoint(uri.removeprefix("runs:/").strip("/"), tracking_uri)
        if uri.startswith("models:/"):
            return _registered_checkpoint(uri, tracking_uri)
    except MlflowException as err:
        raise ConfigError(f"{key}: cannot resolve {uri!r}: {err.message.splitlines()[0]}") from None
    path = Path(uri)
    if not path.is_file():
        raise ConfigError(f"{key}: no such checkpoint file {uri!r} (or use runs:/<run_id>, models:/<name>@<alias>)")
    return path


def _run_checkpoint(run_id: str, tracking_uri: str | None) -> Path:
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    local = run.data.tags.get(BEST_CHECKPOINT_TAG)
    if local and Path(local).is_file():
        return Path(local)
    # Another machine: the checkpoint artifact Lightning's MLFlowLogger logged with alias "best".
    for entry in client.list_artifacts(run_id):
        if entry.is_dir and "best" in _aliases(client, run_id, entry.path, tracking_uri):
            folder = Path(
                mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=entry.path, tracking_uri=tracking_uri)
            )
            return _only_checkpoint_in(folder, f"runs:/{run_id}")
    raise ConfigError(f"checkpoint: run {run_id} has no best checkpoint (was it trained with imgrec?)")


def _aliases(client: MlflowClient, run_id: str, folder: str, tracking_uri: str | None) -> str:
    names = {e.path.rsplit("/", 1)[-1] for e in client.list_artifacts(run_id, folder)}
    if "aliases.txt" not in names:
        return ""
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=f"{folder}/aliases.txt", tracking_uri=tracking_uri
    )
    return Path(path).read_text()


def _registered_checkpoint(uri: str, tracking_uri: str | None) -> Path:
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri))
    return local if local.is_file() else _only_checkpoint_in(local, uri)


def _only_checkpoint_in(folder: Path, uri: str) -> Path:
    found = sorted(folder.rglob("*.ckpt"))
    if not found:
        raise ConfigError(f"checkpoint: {uri} holds no .ckpt file")
    return found[0]


def load_net(path: Path) -> tuple[nn.Module, dict]:
    """Rebuild the network saved in an imgrec checkpoint; returns it with its spec (model config, data shape)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    spec = checkpoint.get(NET_SPEC_KEY)
    if spec is None:
        raise ConfigError(f"checkpoint: {path} was not written by imgrec (it has no '{NET_SPEC_KEY}' entry)")
    net = instantiate(spec["model"], _convert_="all")(in_shape=tuple(spec["in_shape"]), num_classes=spec["num_classes"])
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(weights)
    return net, spec
