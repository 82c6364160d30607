"""`python train.py ...` (`imgrec train`) as a user runs it: exit codes, messages, Hydra multirun and DDP."""

import numpy as np
import pytest
from mlflow import MlflowClient

from imgrec.data.catalog import load_dataset
from imgrec.tracking import predictions
from tests.conftest import FAST, cli, runs, train_py

pytestmark = pytest.mark.slow


def client(tmp_path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")


# What Lightning and MLflow used to print before any work; a default run prints none of it.
NOISE = ("litlogger", "was configured so", "Trainer already configured with model summary", "Seed set to",
         "GPU available", "TPU available", "is not supported by the model summary", "Downloading artifacts",
         "An input example was not provided", "Add type hints to the `predict` method", "python_model")
SHORT = [a for a in FAST if a != "~callbacks.model_summary"]  # the summary is part of what a run prints


def test_the_default_command_trains_tests_reports_the_run_and_prints_none_of_the_framework_noise(tmp_path, idx_root):
    done = train_py(f"data.root={idx_root}", *SHORT, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs(client(tmp_path))
    assert run.info.status == "FINISHED" and run.info.run_name == "cnn-fashion_mnist"
    assert f"MLflow run {run.info.run_id}" in done.stdout
    assert "mlflow ui --backend-store-uri sqlite:///./mlruns/mlflow.db" in done.stdout
    artifacts = {a.path for a in client(tmp_path).list_artifacts(run.info.run_id, "hydra")}
    assert {"hydra/config.yaml", "hydra/overrides.yaml", "hydra/hydra.yaml"} <= artifacts
    assert run.data.tags["command"].startswith("train.py data.root=")
    output = (done.stdout + done.stderr).splitlines()
    assert [line for line in output if any(noise in line for noise in NOISE)] == []
    text = "\n".join(output)
    assert "Total params" in text and "epoch 1/1" in text and "test/acc" in text and "MLflow run" in text


@pytest.mark.parametrize("args, message", [
    (["model=resnet9000"], "error: model=resnet9000: no such option; the options are airbench, alexnet, autoencoder, cnn, "),
    (["model.kernal_size=5"], "error: model.kernal_size: no such key in model (did you mean model.kernel_size?)"),
    (["experiment=nope"], "error: experiment=nope: no such option; the options are cifar10_94, fmnist_94, fmnist_fast, "),
])
def test_a_mistake_in_the_overrides_is_one_line_that_says_what_is_there(args, message, tmp_path):
    done = train_py(*args, cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(message), done.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlruns").exists()  # nothing made


@pytest.mark.parametrize("args, message", [
    (["data.batch_size=-1"], "error: data.batch_size must be a positive integer, got -1"),
    (["trainer.devices=0"], "error: trainer.devices must be a positive number of devices, -1 (all), auto, or a list"),
])
def test_a_bad_value_is_one_line_before_the_store_opens(args, message, tmp_path, idx_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        cli("train", f"data.root={idx_root}", *args)
    assert str(done.value.code).startswith(message)
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "outputs").exists()


def test_missing_dataset_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit) as done:
        cli("train", "data=cifar10", f"data.root={tmp_path / 'none'}", "data.download=false")
    message = str(done.value.code)
    assert message.startswith("error: ") and str(tmp_path / "none") in message and "download" in message
    assert runs(client(tmp_path)) == []


def test_hydra_multirun_gives_one_run_per_job(tmp_path, idx_root):
    done = train_py("-m", "seed=0,1,2", f"data.root={idx_root}", *FAST, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    all_runs = runs(client(tmp_path))
    assert sorted(r.data.params["seed"] for r in all_runs) == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" for r in all_runs)
    assert len({r.data.tags["hydra.output_dir"] for r in all_runs}) == 3


def test_two_process_ddp_on_cpu_logs_one_run_also_when_training_adversarially(tmp_path, idx_root):
    adversarial = ["task.adversarial.method=fgsm_rs", "task.adversarial.eval_eps=0.1", "task.adversarial.val_steps=2",
                   "task.adversarial.test_steps=2", "task.adversarial.autoattack_images=4"]  # 2 images per rank
    done = train_py("trainer=ddp_cpu", f"data.root={idx_root}", *FAST, *adversarial, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs(client(tmp_path))  # rank 1 trains but does not track
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.devices"] == "2" and run.data.params["trainer.strategy"] == "ddp"
    assert {"test/acc", "val/robust_acc", "test/robust_acc"} <= set(run.data.metrics)
    assert run.data.metrics["test/autoattack_acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # the mean over both ranks' images
    # each rank tested every other image: the per-example predictions are gathered back into test-set order
    kept = predictions.of_run(client(tmp_path), run.info.run_id)
    test_labels = load_dataset("mnist", idx_root, download=False).test_labels
    assert np.array_equal(kept.label, test_labels[:len(kept.label)]) and len(kept.label) == len(test_labels)
    assert kept.accuracy == pytest.approx(run.data.metrics["test/acc"])
