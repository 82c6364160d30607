"""`imgrec evaluate` (imgrec.verbs.evaluate): a trained classifier's test metrics on its own or any dataset that fits it."""

import csv

import pytest
from mlflow import MlflowClient

from imgrec.tracking import predictions
from tests.conftest import cli, model_job_args, runs


def evaluation_runs(classifier: dict) -> list:
    return [r for r in runs(MlflowClient(classifier["tracking"])) if r.info.run_name.startswith("evaluate-")]


def test_evaluate_on_its_own_data_finds_it_where_its_run_did_and_reports_as_a_child_of_the_models_run(
        trained_classifier, tmp_path):
    cli("evaluate", *model_job_args(trained_classifier))  # no data=, no data.root: the model's own
    source, data = trained_classifier["run"], trained_classifier["data"]
    (tracked,) = evaluation_runs(trained_classifier)
    assert tracked.info.run_name == f"evaluate-{data}" and tracked.data.params["data"] == data
    assert tracked.data.tags["mlflow.parentRunId"] == source.info.run_id and tracked.info.status == "FINISHED"
    # the same test split as the training run's test: the same accuracy (fp32 here, bf16 autocast there)
    assert tracked.data.metrics["test/acc"] == pytest.approx(source.data.metrics["test/acc"], abs=2 / 64)
    assert {"test/precision", "test/recall", "test/f1"} <= set(tracked.data.metrics)
    out = tmp_path / "outputs" / "evaluate" / source.info.run_id / data
    rows = list(csv.DictReader((out / "per_class_metrics.csv").open()))
    assert len(rows) == 10 and rows[0]["class"] == {"mnist": "0", "cifar10": "airplane"}[data]
    assert sum(int(r["support"]) for r in rows) == int(tracked.data.params["images"])
    assert (out / "confusion_matrix.png").stat().st_size > 5_000 and "test/acc" in (out / "report.md").read_text()
    kept = predictions.load(out / predictions.FILE)  # per example, for imgrec compare's McNemar test
    assert len(kept.label) == int(tracked.data.params["images"])
    assert kept.accuracy == pytest.approx(tracked.data.metrics["test/acc"])


def test_a_dataset_that_does_not_fit_is_refused_in_one_line_or_mapped_by_data_classes(gray_classifier, cifar10_root):
    args, root = model_job_args(gray_classifier), gray_classifier["data_root"]
    with pytest.raises(SystemExit, match=r"^error: data=cifar10 has 3x32x32 images; the model takes 1x28x28"):
        cli("evaluate", *args, "data=cifar10", f"data.root={cifar10_root}")
    # Fashion-MNIST's files have MNIST's shape but other classes: refused, unless data.classes maps them
    with pytest.raises(SystemExit, match=r"data=fashion_mnist's classes .* are not the model's"):
        cli("evaluate", *args, "data=fashion_mnist", f"data.root={root}")
    with pytest.raises(SystemExit, match=r"has 3 classes \(data.classes\); the model has 10"):
        cli("evaluate", *args, "data=fashion_mnist", f"data.root={root}", "data.classes=[0,1,2]")
    assert not evaluation_runs(gray_classifier)  # refused before any run
    cli("evaluate", *args, "data=fashion_mnist", f"data.root={root}", f"data.classes=[{','.join(map(str, range(10)))}]")
    tracked = {r.info.run_name: r for r in evaluation_runs(gray_classifier)}
    assert tracked["evaluate-fashion_mnist"].info.status == "FINISHED"
    assert tracked["evaluate-fashion_mnist"].data.params["trained_on"] == "mnist"


def test_the_command_line_needs_a_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"^error: model=<uri> is required: path/to/epoch_003.ckpt \| runs:/<run_id>"):
        cli("evaluate")
    with pytest.raises(SystemExit, match=r"^error: model: no such checkpoint file 'nowhere.ckpt'; a model is "):
        cli("evaluate", "model=nowhere.ckpt")


def test_a_model_job_finds_its_data_through_the_runs_dataset_input_when_the_checkpoint_does_not_say(
        gray_classifier, tmp_path):
    """An older checkpoint has no data_root: the MLflow dataset input of its run names the folder."""
    import torch

    from imgrec.hub import NET_SPEC_KEY, resolve_checkpoint

    checkpoint = torch.load(resolve_checkpoint(gray_classifier["uri"], gray_classifier["tracking"]), weights_only=True)
    for key in ("data_root", "data_config", "preprocess"):  # what checkpoints hold since they have said where
        checkpoint[NET_SPEC_KEY].pop(key)
    older = tmp_path / "older.ckpt"
    torch.save(checkpoint, older)
    report = cli("evaluate", *model_job_args(gray_classifier)[1:], f"model={older}")
    assert report.metrics["test/acc"] == pytest.approx(gray_classifier["run"].data.metrics["test/acc"], abs=2 / 64)
    with pytest.raises(SystemExit, match=r"^error: dataset 'mnist' not found; looked in /nowhere"):
        cli("evaluate", *model_job_args(gray_classifier), "data.root=/nowhere")  # an explicit data.root wins
