"""The one door to a trained model: a checkpoint, an MLflow run or a registered model -> its network.

    path/to/epoch_003.ckpt     a checkpoint file written by imgrec
    runs:/<run_id>             that run's best checkpoint (found locally, or downloaded from its artifacts)
    models:/<name>@<alias>     a registered model version (an alias such as champion)
    models:/<name>/<version>   a registered model version by number
    timm:<model_name>          an ImageNet-pretrained timm classifier (needs timm)

`load_net(uri)` rebuilds the network as it was trained: it expects the normalized inputs its datamodule
made. `load_model(uri)` wraps it so that it takes float images in [0, 1] pixel units (N, C, H, W) and
returns logits, the training split's normalization inside: attack epsilons, exported and served models
and explanations all mean the same pixels. Every checkpoint carries its `NetSpec` under NET_SPEC_KEY.

Checkpoints are read with `torch.load(weights_only=True)`: a checkpoint that would run code is refused.
"""

import copy
import importlib.util
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgrec import hardware, models
from imgrec.config import URI_FORMS, default_tracking_uri
from imgrec.data.decode import Preprocess
from imgrec.data.pixels import Normalization
from imgrec.errors import ConfigError, one_line
from imgrec.inference_precision import bf16_from_batch
from imgrec.inference_precision import check as check_precision
from imgrec.models.spec import NET_SPEC_KEY, NetSpec

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class PixelModel(nn.Module):
    """A trained classifier that takes [0, 1] images (N, C, H, W) and returns logits (float32).

    `bf16_from`: batches of at least this many images run under bf16 autocast, in channels_last for conv nets as in
    training (None: every batch in fp32); `load_model(precision="auto")` sets it to where bf16 measured faster here."""

    def __init__(self, net: nn.Module, spec: NetSpec, bf16_from: int | None = None):
        super().__init__()
        self.normalization = Normalization(spec.mean, spec.std)
        self.net = net
        self.spec = spec
        self.bf16_from = bf16_from
        self._bf16_copy: tuple[nn.Module] | None = None  # a tuple: not a submodule, not in the state dict

    def bf16_net(self) -> nn.Module:
        """The net the bf16 path runs: for a conv net a channels_last copy, made once (the weights' layout is what
        counts: fed a channels_last input instead, the trained net ran the cnn at batch 256 at 5,776 img/s, the copy
        at 37,822); the fp32 path keeps the net as trained, fastest at small batches."""
        if self._bf16_copy is None:
            channels_last = hardware.auto_memory_format(self.net) == "channels_last"
            self._bf16_copy = (copy.deepcopy(self.net).to(memory_format=torch.channels_last) if channels_last
                               else self.net,)
        return self._bf16_copy[0]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names or tuple(str(i) for i in range(self.spec.num_classes))

    @property
    def preprocess(self) -> Preprocess:
        """How a raw image of any size and mode becomes this model's input (imgrec.data.decode)."""
        return preprocess_of(self.spec)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.bf16_from is None or len(pixels) < self.bf16_from or pixels.device.type != "cpu":
            return self.net(self.normalization(pixels))  # exports trace this path (bf16_from is None)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.bf16_net()(self.normalization(pixels)).float()


def preprocess_of(spec: NetSpec) -> Preprocess:
    """The spec's preprocessing; an older checkpoint's: its input size, nothing cropped."""
    return Preprocess.from_dict(spec.preprocess) if spec.preprocess else Preprocess.native(spec.in_shape)


def resolve_checkpoint(uri: str, tracking_uri: str | None = None, key: str = "model") -> Path:
    """A local checkpoint file for `uri` (runs:/ and models:/ artifacts are downloaded when needed)."""
    uri = str(uri)
    if uri.startswith(("runs:/", "models:/")):
        from mlflow.exceptions import MlflowException

        tracking_uri = tracking_uri or default_tracking_uri()
        try:
            if uri.startswith("runs:/"):
                return _run_checkpoint(uri.removeprefix("runs:/").strip("/"), tracking_uri, key)
            return _registered_checkpoint(uri, tracking_uri, key)
        except MlflowException as err:
            raise ConfigError(f"{key}: cannot resolve {uri!r} in {tracking_uri}: {err.message.splitlines()[0]}") from None
    path = Path(uri)
    if not path.is_file():
        raise ConfigError(f"{key}: no such checkpoint file {uri!r}; a model is {URI_FORMS}")
    return path


def _run_checkpoint(run_id: str, tracking_uri: str, key: str) -> Path:
    import mlflow

    from imgrec.tracking.run import BEST_CHECKPOINT_TAG
    from imgrec.tracking.store import open_store

    client = open_store(tracking_uri)
    local = client.get_run(run_id).data.tags.get(BEST_CHECKPOINT_TAG)
    if local and Path(local).is_file():
        return Path(local)
    # Another machine: the checkpoint artifact Lightning's MLFlowLogger logged with alias "best".
    for entry in client.list_artifacts(run_id):
        if entry.is_dir and "best" in _aliases(client, run_id, entry.path, tracking_uri):
            folder = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=entry.path, tracking_uri=tracking_uri)
            return _only_checkpoint_in(Path(folder), f"runs:/{run_id}", key)
    raise ConfigError(f"{key}: run {run_id} has no best checkpoint (was it trained by imgrec, and has it finished?)")


def _aliases(client, run_id: str, folder: str, tracking_uri: str) -> str:
    import mlflow

    if "aliases.txt" not in {e.path.rsplit("/", 1)[-1] for e in client.list_artifacts(run_id, folder)}:
        return ""
    return Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=f"{folder}/aliases.txt", tracking_uri=tracking_uri)).read_text()


def _registered_checkpoint(uri: str, tracking_uri: str, key: str) -> Path:
    """models:/<name>@<alias> or models:/<name>/<version>, looked up in this tracking store's registry
    (mlflow.artifacts would ask the process-wide registry URI instead)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    name, _, version = uri.removeprefix("models:/").strip("/").partition("/")
    if "@" in name:
        name, alias = name.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    elif not version.isdigit():
        raise ConfigError(f"{key}: {uri!r} is neither models:/<name>@<alias> nor models:/<name>/<version>")
    source = client.get_model_version_download_uri(name, version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=tracking_uri))
    return local if local.is_file() else _only_checkpoint_in(local, uri, key)


def _only_checkpoint_in(folder: Path, uri: str, key: str) -> Path:
    found = sorted(folder.rglob("*.ckpt"))
    if not found:
        raise ConfigError(f"{key}: {uri} holds no .ckpt file")
    return found[0]


def read_checkpoint(path: Path, key: str = "model") -> dict[str, Any]:
    """A checkpoint's contents, unpickled with torch's weights-only allowlist: nothing in it can run code."""
    if not zipfile.is_zipfile(path):  # what torch.save writes; anything else would fail deep inside torch.load
        raise ConfigError(f"{key}: {path} is not a PyTorch checkpoint (not a zip archive); a model is {URI_FORMS}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for a hostile or foreign pickle, RuntimeError for a non-zip file
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        why = f"it refers to {refused.group(1)}, which only code needs" if refused else one_line(err)[:200]
        raise ConfigError(f"{key}: {path} is not a checkpoint imgrec can load safely: {why}") from None


def load_net(uri: str, tracking_uri: str | None = None, key: str = "model") -> tuple[nn.Module, NetSpec]:
    """The trained network of `uri` (in eval mode, on the CPU) and its spec."""
    if str(uri).startswith("timm:"):
        return _timm_net(str(uri).removeprefix("timm:"), key)
    path = resolve_checkpoint(uri, tracking_uri, key)
    checkpoint = read_checkpoint(path, key)
    entry = checkpoint.get(NET_SPEC_KEY) if isinstance(checkpoint, dict) else None
    if entry is None:
        raise ConfigError(f"{key}: {path} was not written by imgrec (it has no '{NET_SPEC_KEY}' entry)")
    spec = NetSpec.from_dict(entry)
    net = models.build(spec.model, spec.in_shape, spec.num_classes)
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(weights)
    return net.eval(), spec


def load_model(uri: str, tracking_uri: str | None = None, key: str = "model", precision: str = "32-true") -> PixelModel:
    """The trained classifier of `uri`, taking [0, 1] images and returning logits (eval mode, frozen weights).

    `precision`: 32-true (the default: attacks and attributions want exact gradients), bf16-mixed (bf16 autocast
    for every batch) or auto (bf16 from the batch size where it measured faster here: imgrec.inference_precision)."""
    precision = check_precision(precision)
    net, spec = load_net(uri, tracking_uri, key)
    if spec.mean is None or spec.std is None:
        raise ConfigError(f"{key}: {uri} was saved without its normalization statistics (an older imgrec); "
                          "train it again to use it here")
    model = PixelModel(net, spec).eval().requires_grad_(False)
    with torch.no_grad():
        logits = model(torch.zeros(2, *spec.in_shape))
    if tuple(logits.shape) != (2, spec.num_classes):
        raise ConfigError(f"{key}: {uri} is not a classifier (a model={spec.model.get('_target_')} whose output "
                          f"for 2 images is {tuple(logits.shape)}, not (2, {spec.num_classes}))")
    if precision == "bf16-mixed":
        model.bf16_from = 1
    elif precision == "auto":
        model.bf16_from, _ = bf16_from_batch(model, spec.in_shape)
    return model


def _timm_net(name: str, key: str) -> tuple[nn.Module, NetSpec]:
    """An ImageNet classifier from timm (weights download on first use), as an imgrec network."""
    spec = NetSpec(model={"_target_": "imgrec.models.pretrained.TimmNet", "_partial_": True, "name": name},
                   in_shape=(3, 224, 224), num_classes=1000, data="imagenet", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if importlib.util.find_spec("timm") is None:
        raise ConfigError(f"{key}: 'timm:{name}' needs timm (pip install timm)")
    return models.build({**spec.model, "pretrained": True}, spec.in_shape, spec.num_classes).eval(), spec

