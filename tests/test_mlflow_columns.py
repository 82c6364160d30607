"""What the MLflow UI shows for a training run besides metrics: its dataset (an MLflow dataset input) and its
model (the best checkpoint as an MLflow pyfunc model of the run)."""

import json

import mlflow
import numpy as np
import pytest

from imgrec.train import train
from tests.conftest import runs
from tests.dataset_files import write_idx_dataset


def dataset_of(run) -> tuple:
    (entry,) = run.inputs.dataset_inputs
    return entry.dataset, {t.key: t.value for t in entry.tags}


def test_a_run_logs_its_dataset_with_a_digest_that_follows_the_files(make_cfg, mlflow_client, tmp_path):
    root = tmp_path / "idx"
    write_idx_dataset(root, n_train=256, n_test=64, gz=True)
    train(make_cfg("data=mnist", f"data.root={root}", "logger.log_model=false"))
    dataset, tags = dataset_of(runs(mlflow_client)[0])
    profile = json.loads(dataset.profile)
    assert dataset.name == "mnist" and dataset.source_type == "local" and str(root) in dataset.source
    assert tags["mlflow.data.context"] == "training"
    assert (profile["train"], profile["validation"], profile["test"]) == (224, 32, 64)
    assert profile["classes"] == [str(i) for i in range(10)] and profile["image_shape"] == [1, 28, 28]
    train(make_cfg("data=mnist", f"data.root={root}", "logger.log_model=false", "seed=1"))  # same files, same split
    write_idx_dataset(root, n_train=256, n_test=64, gz=True, seed=7)  # other files
    train(make_cfg("data=mnist", f"data.root={root}", "logger.log_model=false"))
    first, again, changed = (dataset_of(r)[0] for r in sorted(runs(mlflow_client), key=lambda r: r.info.start_time))
    assert again.digest == first.digest and changed.digest != first.digest
    assert json.loads(changed.profile)["files_digest"] != profile["files_digest"]


def test_a_classifier_run_has_its_best_checkpoint_as_its_mlflow_model(make_cfg, mlflow_client, idx_root, tmp_path):
    train(make_cfg("data=mnist", f"data.root={idx_root}", "logger.log_model=true"))
    (run,) = runs(mlflow_client)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (model,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert model.source_run_id == run.info.run_id and model.status.name == "READY"
    assert [o.model_id for o in mlflow_client.get_run(run.info.run_id).outputs.model_outputs] == [model.model_id]
    pyfunc = mlflow.pyfunc.load_model(model.model_uri)
    frame = pyfunc.predict(np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32))
    assert list(frame.columns) == [*(str(i) for i in range(10)), "pred"]
    assert frame.iloc[:, :10].sum(axis=1).to_numpy() == pytest.approx([1.0, 1.0], abs=1e-5)
