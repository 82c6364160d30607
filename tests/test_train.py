"""train(cfg) end to end on tiny data in the real formats, and what it leaves in MLflow."""

import signal
from pathlib import Path

import pytest

from imgrec.errors import ConfigError, DataNotFoundError
from imgrec.tasks.classification import ClassificationTask
from imgrec.train import train
from tests.conftest import runs
from tests.dataset_files import write_cifar100, write_idx_dataset

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.fixture
def roots(idx_root, cifar10_root, tmp_path_factory) -> dict[str, Path]:
    raw_idx = tmp_path_factory.mktemp("raw_idx")
    write_idx_dataset(raw_idx, n_train=256, n_test=64, gz=False)
    cifar100 = tmp_path_factory.mktemp("cifar100")
    write_cifar100(cifar100, n=200, as_tarball=False)
    return {"mnist": idx_root, "fashion_mnist": raw_idx, "cifar10": cifar10_root, "cifar100": cifar100}


@pytest.mark.parametrize(
    "model, data",
    [("cnn", "mnist"), ("keras_cnn", "fashion_mnist"), ("tf_cnn", "cifar10"), ("mlp", "cifar100"),
     ("cnn", "digits"), ("mlp", "digits")],
)
def test_every_model_trains_on_every_dataset_format(make_cfg, mlflow_client, roots, model, data):
    root = [f"data.root={roots[data]}"] if data in roots else []
    metric = train(make_cfg(f"model={model}", f"data={data}", *root))
    assert 0.0 <= metric <= 1.0
    (run,) = runs(mlflow_client)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"{model}-{data}"
    assert "test/acc" in run.data.metrics


def test_a_run_records_config_metrics_artifacts_and_identity(make_cfg, mlflow_client, idx_root):
    cfg = make_cfg("data=mnist", f"data.root={idx_root}", "trainer.max_epochs=2", "seed=0")
    train(cfg)
    (run,) = runs(mlflow_client)
    params, tags = run.data.params, run.data.tags
    assert params["seed"] == "0"  # 0 is a seed, not "unset"
    assert params["data.batch_size"] == "16" and params["model._target_"] == "imgrec.models.cnn.ConvNet"
    history = mlflow_client.get_metric_history(run.info.run_id, "val/acc")
    assert len(history) == 2  # one point per epoch
    assert {"train/loss", "val/acc_best", "test/f1", "test/precision", "test/recall"} <= set(run.data.metrics)
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "per_class_metrics.csv", "test_predictions.npz"} <= artifacts
    assert tags["imgrec.choice.model"] == "cnn" and tags["imgrec.choice.optimizer"] == "adam"  # compare's group_by
    checkpoints = [a for a in artifacts if a.startswith("epoch_")]
    assert checkpoints, f"best checkpoint not logged: {artifacts}"
    assert len(tags["imgrec.config_hash"]) == 16 and len(tags["imgrec.recipe_hash"]) == 16
    assert run.data.metrics["fit/epochs"] == 2 and run.data.metrics["fit/steps"] == 8  # 4 batches per epoch
    assert Path(tags["imgrec.checkpoint_dir"], "last.ckpt").is_file()
    csv = Path(mlflow_client.download_artifacts(run.info.run_id, "per_class_metrics.csv")).read_text().splitlines()
    assert csv[0] == "class,precision,recall,f1,support" and len(csv) == 11


def test_the_same_seed_gives_the_same_result(make_cfg, idx_root):
    first = train(make_cfg("data=mnist", f"data.root={idx_root}", "seed=3"))
    second = train(make_cfg("data=mnist", f"data.root={idx_root}", "seed=3"))
    assert first == second


def test_runs_that_differ_only_by_seed_share_a_recipe_hash(make_cfg, mlflow_client, idx_root):
    for seed in (0, 1):  # max_steps stops the second epoch halfway: 1.5 epochs
        train(make_cfg("data=mnist", f"data.root={idx_root}", f"seed={seed}", "trainer.max_epochs=3", "trainer.max_steps=6"))
    first, second = runs(mlflow_client)
    assert first.data.tags["imgrec.recipe_hash"] == second.data.tags["imgrec.recipe_hash"]
    assert first.data.tags["imgrec.config_hash"] != second.data.tags["imgrec.config_hash"]
    assert first.data.metrics["fit/epochs"] == 1.5


def test_a_failing_run_ends_failed_with_the_error(make_cfg, mlflow_client, idx_root, monkeypatch):
    def broken_step(self, batch, batch_idx):
        raise RuntimeError("exploded on purpose")

    monkeypatch.setattr(ClassificationTask, "training_step", broken_step)
    with pytest.raises(RuntimeError, match="exploded"):
        train(make_cfg("data=mnist", f"data.root={idx_root}"))
    (run,) = runs(mlflow_client)
    assert run.info.status == "FAILED"
    assert "exploded on purpose" in run.data.tags["error"]


def test_an_interrupted_run_ends_killed_and_ckpt_path_last_resumes_it(make_cfg, mlflow_client, idx_root, monkeypatch):
    overrides = ["data=mnist", f"data.root={idx_root}", "trainer.max_epochs=3"]

    def interrupt_at_epoch_2(self):
        if self.current_epoch == 2:
            raise KeyboardInterrupt

    sigint = signal.getsignal(signal.SIGINT)  # Lightning ignores further Ctrl-C after one
    with monkeypatch.context() as patch:
        patch.setattr(ClassificationTask, "on_train_epoch_start", interrupt_at_epoch_2)
        with pytest.raises(SystemExit):
            train(make_cfg(*overrides))
    signal.signal(signal.SIGINT, sigint)
    (killed,) = runs(mlflow_client)
    assert killed.info.status == "KILLED"
    assert len(mlflow_client.get_metric_history(killed.info.run_id, "val/acc")) == 2

    train(make_cfg(*overrides, "ckpt_path=last"))
    (resumed,) = runs(mlflow_client)  # the same run, not a new one
    assert resumed.info.run_id == killed.info.run_id
    assert resumed.info.status == "FINISHED"
    steps = [m.step for m in mlflow_client.get_metric_history(resumed.info.run_id, "val/acc")]
    assert len(steps) == 3 and steps == sorted(set(steps))  # the third epoch continued; a restart repeats steps


def test_ckpt_path_last_with_nothing_to_resume_starts_a_new_run(make_cfg, mlflow_client, idx_root):
    train(make_cfg("data=mnist", f"data.root={idx_root}", "ckpt_path=last"))
    assert [r.info.status for r in runs(mlflow_client)] == ["FINISHED"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.batch_size=0", "data.batch_size must be a positive integer"),
        ("optimizer.lr=-1", "optimizer.lr must be a number > 0 or auto (the finder's), got -1"),
        ("model.kernel_size=[3,3,3]", "model: kernel_size"),
        ("model.activation=swishy", "model: activation"),
        ("task.loss=hinge", "task: task.loss"),
        ("trainer.max_epochs=-5", "trainer:"),
        ("data.val_size=100000", "data.val_size=100000 must leave images for both training and validation"),
        ("data.val_size=1.5", "data.val_size must be a positive number of images, or a fraction"),
        ("ckpt_path=/nonexistent.ckpt", "ckpt_path: no such checkpoint file"),
        ("trainer.max_epochs=abc", "trainer.max_epochs must be an integer or null, got 'abc'"),
        ("trainer.precision=bf17", "trainer.precision must be one of"),
        ("+trainer.max_epoch=3", "trainer.max_epoch is not an argument of lightning.Trainer (did you mean max_epochs?)"),
        ("+model.kernal_size=3", "model.kernal_size is not an argument of imgrec.models.cnn.ConvNet"),
        ("seed=abc", "seed must be an integer or null"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key_and_no_run_is_created(make_cfg, mlflow_client, idx_root, override, message):
    with pytest.raises(ConfigError) as error:
        train(make_cfg("data=mnist", f"data.root={idx_root}", override))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert runs(mlflow_client) == []  # refused before any run exists


def test_missing_data_fails_before_any_run_is_created(make_cfg, mlflow_client, tmp_path):
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "empty")):
        train(make_cfg("data=mnist", f"data.root={tmp_path / 'empty'}", "data.download=false"))
    assert runs(mlflow_client) == []


@pytest.mark.skipif(not FASHION_MNIST.exists(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_learns(make_cfg, tmp_path):
    cfg = make_cfg(
        f"data.root={tmp_path / 'nothing_here'}",  # found in the Debian location instead
        "trainer.limit_train_batches=150", "trainer.limit_val_batches=5", "trainer.limit_test_batches=5",
        "data.batch_size=64", "data.val_size=5000", "data.eval_batch_size=500",
    )
    assert train(cfg) > 0.75  # ~0.83 after 150 steps; chance is 0.10


def test_the_network_summary_lists_layers_not_metric_objects_and_no_empty_flops(capsys):
    import lightning as L
    import torch
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy

    from imgrec.progress import NetworkSummary

    class Task(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 3)
            self.val_metrics = MetricCollection({"acc": MulticlassAccuracy(3)})
            self.test_acc = MulticlassAccuracy(3)

    trainer = type("Trainer", (), {"is_global_zero": True, "strategy": None})()
    NetworkSummary(max_depth=1).on_fit_start(trainer, Task())
    shown = capsys.readouterr().out
    assert "net" in shown and "Linear" in shown and "15" in shown  # the layer and its 4 x 3 + 3 parameters
    assert "metrics" not in shown and "Accuracy" not in shown and "test_acc" not in shown
    assert "FLOPs" not in shown
