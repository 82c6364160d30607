"""imgrec.hub: every URI form, the [0, 1]-pixel model, refusals in one line, and rebuilds that need no lookup."""

import importlib.machinery
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from torch import nn

from imgrec.errors import ConfigError
from imgrec.hub import NET_SPEC_KEY, PixelModel, load_model, load_net, resolve_checkpoint
from imgrec.models.transfer import TransferNet
from imgrec.train import build_datamodule, build_task, train
from tests.conftest import runs


def tracking_uri(home: Path) -> str:
    return f"sqlite:///{home}/mlruns/mlflow.db"


@pytest.fixture
def trained(make_cfg, mlflow_client, idx_root, tmp_path):
    """A classifier run on tiny MNIST-format data: (its config, its run)."""
    cfg = make_cfg("data=mnist", f"data.root={idx_root}", "model=mlp")
    train(cfg)
    (run,) = runs(mlflow_client)
    return cfg, run


def test_load_model_of_a_trained_run_matches_the_task_on_normalized_images(tmp_path, idx_root, make_cfg):
    train(make_cfg(f"data.root={idx_root}"))
    (run,) = runs(MlflowClient(tracking_uri(tmp_path)))
    model = load_model(f"runs:/{run.info.run_id}", tracking_uri(tmp_path))
    assert isinstance(model, PixelModel) and not model.training
    assert model.spec.run_id == run.info.run_id and model.spec.data == "fashion_mnist"
    assert model.class_names[0] == "T-shirt/top"

    # The task as train.py built it, with the checkpoint's weights, fed the datamodule's evaluation pixels.
    cfg = make_cfg(f"data.root={idx_root}")
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    task = build_task(cfg, datamodule)
    checkpoint = torch.load(run.data.tags["imgrec.best_checkpoint"], weights_only=True)
    task.load_state_dict(checkpoint["state_dict"])
    task.normalization = datamodule.normalization  # what task.setup() takes from the trainer's datamodule
    images, _ = datamodule.test_set.head(16)
    with torch.no_grad():
        expected = task.eval()(datamodule.eval_pixels(images))
        got = model(images.float() / 255)
    assert torch.allclose(got, expected, atol=1e-5)
    assert list(model.spec.mean) == pytest.approx(datamodule.normalization.stats()[0])


def test_every_uri_form_gives_the_same_network(trained, tmp_path):
    _, run = trained
    uri = tracking_uri(tmp_path)
    run_id = run.info.run_id
    client = MlflowClient(uri, registry_uri=uri)
    checkpoint_folder = next(a.path for a in client.list_artifacts(run_id) if a.is_dir and a.path.startswith("epoch_"))
    client.create_registered_model("tiny-mlp")
    version = client.create_model_version("tiny-mlp", source=f"runs:/{run_id}/{checkpoint_folder}", run_id=run_id)
    client.set_registered_model_alias("tiny-mlp", "champion", version.version)

    images = torch.rand(4, 1, 28, 28)
    outputs = []
    for form in (run.data.tags["imgrec.best_checkpoint"], f"runs:/{run_id}", "models:/tiny-mlp@champion",
                 f"models:/tiny-mlp/{version.version}"):
        outputs.append(load_model(form, uri)(images))
    assert all(torch.equal(out, outputs[0]) for out in outputs[1:])

    # Another machine: the local checkpoint is gone, the run's artifact is downloaded instead.
    Path(run.data.tags["imgrec.best_checkpoint"]).unlink()
    assert torch.equal(load_model(f"runs:/{run_id}", uri)(images), outputs[0])


@pytest.mark.parametrize("uri, message", [
    ("runs:/0123456789abcdef", "model: cannot resolve 'runs:/0123456789abcdef'"),
    ("models:/nobody@champion", "Registered Model with name=nobody not found"),
    ("models:/nobody/latest", "neither models:/<name>@<alias> nor models:/<name>/<version>"),
    ("/no/such/file.ckpt", "no such checkpoint file"),
])
def test_a_uri_that_leads_nowhere_is_one_line_naming_the_key(uri, message, tmp_path, empty_mlflow_db):
    with pytest.raises(ConfigError) as error:
        resolve_checkpoint(uri, f"sqlite:///{empty_mlflow_db}", key="model")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_checkpoints_not_written_by_imgrec_are_refused_in_one_line(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(ConfigError, match="was not written by imgrec"):
        load_net(str(foreign))
    for garbage in (tmp_path / "garbage.ckpt", Path("/etc/passwd")):  # any file: one line that says what a model is
        if not garbage.exists():
            garbage.write_bytes(b"not a checkpoint at all")
        with pytest.raises(ConfigError, match=r"is not a PyTorch checkpoint \(not a zip archive\); a model is "
                                              r"path/to/epoch_003.ckpt \| runs:/<run_id>") as error:
            load_net(str(garbage))
        assert "\n" not in str(error.value)


class Payload:
    """Unpickling it would create a file: what a hostile checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_hostile_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.ckpt"
    torch.save({NET_SPEC_KEY: {}, "state_dict": {}, "payload": Payload(marker)}, hostile)
    with pytest.raises(ConfigError, match="hostile.ckpt is not a checkpoint imgrec can load safely"):
        load_net(str(hostile))
    assert not marker.exists()


def test_load_model_refuses_a_network_that_is_not_a_classifier(make_cfg, mlflow_client, idx_root, tmp_path):
    train(make_cfg("data=mnist", f"data.root={idx_root}", "model=autoencoder", "model.channels=[4,8]"))
    (run,) = runs(mlflow_client)
    net, spec = load_net(f"runs:/{run.info.run_id}", tracking_uri(tmp_path))  # the network itself loads
    assert net(torch.zeros(1, 1, 28, 28)).shape == (1, 1, 28, 28)
    with pytest.raises(ConfigError, match="is not a classifier"):
        load_model(f"runs:/{run.info.run_id}", tracking_uri(tmp_path))


def test_a_transfer_checkpoint_rebuilds_without_its_source(make_cfg, mlflow_client, trained, idx_root, tmp_path):
    _, source = trained
    train(make_cfg("model=transfer", f"model.backbone.checkpoint=runs:/{source.info.run_id}", "data=mnist",
                   f"data.root={idx_root}"))
    target = runs(mlflow_client)[-1]
    images = torch.rand(3, 1, 28, 28)
    before = load_model(f"runs:/{target.info.run_id}", tracking_uri(tmp_path))(images)

    # The source is gone from this store and this disk: the rebuild must not look it up again.
    mlflow_client.delete_run(source.info.run_id)
    shutil.rmtree(Path(source.data.tags["imgrec.checkpoint_dir"]))
    model = load_model(f"runs:/{target.info.run_id}", tracking_uri(tmp_path))
    assert isinstance(model.net, TransferNet) and "checkpoint" not in str(model.spec.model)
    assert model.spec.model["source"]["run_id"] == source.info.run_id  # where it came from, for the record
    assert torch.equal(model(images), before)


def test_timm_uris_build_through_the_hub(monkeypatch):
    """timm is not installed (its torchvision pulls a CUDA torch): a stand-in module checks the wiring."""
    timm = types.ModuleType("timm")
    timm.__spec__ = importlib.machinery.ModuleSpec("timm", None)
    created = []

    def create_model(name, pretrained, num_classes, in_chans):
        created.append((name, pretrained))
        return nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    timm.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", timm)
    net, spec = load_net("timm:tiny")
    assert created == [("tiny", True)] and spec.in_shape == (3, 224, 224) and spec.num_classes == 1000
    transfer = TransferNet((1, 28, 28), 10, source=spec.to_dict(), backbone=net)
    assert transfer(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    monkeypatch.delitem(sys.modules, "timm")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="needs timm"):
        load_net("timm:tiny")


def test_batches_arrive_as_pixels_and_the_task_normalizes_them_first(make_cfg, idx_root):
    cfg = make_cfg("data=mnist", f"data.root={idx_root}")
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    task = build_task(cfg, datamodule)
    task.normalization = datamodule.normalization  # what task.setup() takes from the trainer's datamodule
    images, labels = datamodule.val_set.head(4)
    pixels, same = datamodule.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(pixels, images.float() / 255) and torch.equal(same, labels)
    normalized = task.normalize(pixels)
    assert normalized.mean().abs() < 1.0 and not torch.allclose(normalized, pixels)  # the training split's stats
    seen = []
    task.net.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        task(pixels)
    assert torch.equal(seen[0], normalized)  # the network's first step
