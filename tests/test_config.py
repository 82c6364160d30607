"""Every option of every config group composes, and what it describes can be built."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from imgrec.config import options
from imgrec.hardware import auto_precision
from imgrec.tasks.base import Task
from imgrec.tasks.classification import ClassificationTask
from imgrec.train import build_task
from tests.conftest import FAST


def test_the_fixed_groups_exist():
    for group in ("model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks",
                  "experiment", "debug", "sweep", "table", "paths", "hydra"):
        assert options(group), f"conf/{group}/ is empty"
    assert {"cpu", "gpu", "ddp", "ddp_cpu"} <= set(options("trainer"))
    assert {"sgd", "adam", "adamw", "rmsprop"} <= set(options("optimizer"))
    assert {"none", "step", "multistep", "cosine", "onecycle", "plateau"} <= set(options("scheduler"))


@pytest.mark.parametrize("data", ["fashion_mnist", "cifar10"])
# transfer and pruned need a trained model: test_rnn_transfer, test_edge
@pytest.mark.parametrize("model", [m for m in options("model") if m not in ("transfer", "pruned")])
def test_every_model_builds_its_task_for_grayscale_and_rgb_data(make_cfg, model, data):
    cfg = make_cfg(f"model={model}", f"data={data}")
    datamodule = instantiate(cfg.data)
    task = build_task(cfg, datamodule)
    assert isinstance(task, Task) and task.net_spec["in_shape"] == list(datamodule.in_shape)
    if isinstance(task, ClassificationTask):
        assert task(torch.zeros(2, *datamodule.in_shape)).shape == (2, datamodule.num_classes)


@pytest.mark.parametrize("data", options("data"))
def test_every_dataset_config_builds_a_datamodule(make_cfg, tmp_path, data):
    from tests.dataset_files import write_hf_dataset, write_image_folder

    where = {"folder": ["data.root=" + str(tmp_path / "images")], "hf": ["data.path=" + str(tmp_path / "hf")],
             "stream": ["data.uri=" + str(tmp_path / "shards")]}
    write_image_folder(tmp_path / "images", per_class=20)
    write_hf_dataset(tmp_path / "hf", per_class=20)
    if data == "stream":  # shards of the folder
        from tests.conftest import cli

        cli("shard", "data=folder", f"data.root={tmp_path / 'images'}", f"out={tmp_path / 'shards'}",
            f"paths.root={tmp_path}")
    quick = [o for o in FAST if not (data == "stream" and o.startswith("data.val_size"))]
    datamodule = instantiate(make_cfg(f"data={data}", *where.get(data, []), *quick, fast=False).data)
    if data in where:  # your own images: their shape and classes are known once they are decoded
        datamodule.load()
    assert datamodule.name == data and datamodule.num_classes == len(datamodule.class_names) > 1
    assert len(datamodule.in_shape) == 3


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_every_optimizer_works_with_every_scheduler(make_cfg, optimizer, scheduler):
    cfg = make_cfg(f"optimizer={optimizer}", f"scheduler={scheduler}")
    opt = instantiate(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(2))])
    schedule = instantiate(cfg.scheduler).schedule
    if schedule is not None:
        kwargs = {k: 100 for k in ("T_max", "total_steps") if schedule.keywords.get(k, 0) is None}
        assert schedule(optimizer=opt, **kwargs).optimizer is opt


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_composes_and_cpu_ones_build(make_cfg, trainer):
    cfg = make_cfg(f"trainer={trainer}", fast=False)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if cfg.trainer.accelerator in ("cpu", "auto") and cfg.trainer.strategy == "auto":
        precision = auto_precision(cfg.trainer.accelerator) if cfg.trainer.precision == "auto" else cfg.trainer.precision
        built = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, precision=precision)
        assert built.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("group", ["experiment", "debug"])
def test_every_preset_changes_the_config_and_builds(make_cfg, group):
    def body(cfg):  # unresolved, so run directories do not differ
        return {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}

    plain = body(make_cfg(fast=False))
    for option in options(group):
        cfg = make_cfg(f"{group}={option}", fast=False)
        assert body(cfg) != plain, f"{group}={option} changes nothing"
        assert isinstance(build_task(cfg, instantiate(cfg.data)), Task)


def test_callbacks_build(make_cfg):
    callbacks = [instantiate(c) for c in make_cfg().callbacks.values()]
    assert any(type(c).__name__ == "ModelCheckpoint" for c in callbacks)


def test_tracking_uri_defaults_to_sqlite_and_the_env_var_wins(make_cfg, tmp_path, monkeypatch):
    assert make_cfg().logger.tracking_uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert make_cfg().logger.tracking_uri == "http://mlflow.example:5000"


def test_config_hash_ignores_where_things_live_but_not_what_is_trained(make_cfg, monkeypatch):
    from imgrec.tracking.identity import config_hash

    before = config_hash(make_cfg())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")  # MLflow exports it on first use
    assert config_hash(make_cfg()) == before
    assert config_hash(make_cfg("optimizer.lr=0.5")) != before


def test_a_key_added_later_hashes_as_before_while_it_keeps_its_neutral_value(make_cfg):
    from omegaconf import open_dict

    from imgrec.tracking.identity import NEUTRAL_WHEN_ADDED, config_hash

    for key in NEUTRAL_WHEN_ADDED:
        overrides = ["model=resnet20"] if key.startswith("model.") else []  # a family that has the key
        cfg = make_cfg(*overrides)
        group, name = key.rsplit(".", 1)
        with open_dict(cfg):
            del OmegaConf.select(cfg, group)[name]  # the config as it was before the key existed
        assert config_hash(make_cfg(*overrides)) == config_hash(cfg), key
    assert config_hash(make_cfg("task.tta_translate=1")) != config_hash(make_cfg())
    # a renamed target hashes under the name it had (the built-in datasets' datamodule)
    renamed = make_cfg()
    renamed.data._target_ = "imgrec.data.datamodule.ImageDataModule"
    assert config_hash(renamed) == config_hash(make_cfg()) != config_hash(make_cfg("data=mnist"))
