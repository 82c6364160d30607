"""scripts/evaluate.py (imgrec.evaluate): a trained classifier's test metrics on any dataset that fits it."""

import csv
import json
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from imgrec.errors import ConfigError
from imgrec.evaluate import run as evaluate_script
from tests.conftest import REPO, model_job_args, runs


def evaluation_runs(classifier: dict) -> list:
    return [r for r in runs(MlflowClient(classifier["tracking"])) if r.info.run_name.startswith("evaluate-")]


def test_evaluate_writes_the_tasks_test_report_as_a_child_of_the_models_run(trained_classifier, tmp_path):
    root = trained_classifier["data_root"]
    evaluate_script([*model_job_args(trained_classifier), "data=mnist", f"data.root={root}"])
    source = trained_classifier["run"]
    (tracked,) = evaluation_runs(trained_classifier)
    assert tracked.data.tags["mlflow.parentRunId"] == source.info.run_id and tracked.info.status == "FINISHED"
    # the same test split as the training run's test: the same accuracy (fp32 here, bf16 autocast there)
    assert tracked.data.metrics["test/acc"] == pytest.approx(source.data.metrics["test/acc"], abs=2 / 64)
    assert {"test/precision", "test/recall", "test/f1"} <= set(tracked.data.metrics)
    out = tmp_path / "outputs" / "evaluate" / source.info.run_id / "mnist"
    rows = list(csv.DictReader((out / "per_class_metrics.csv").open()))
    assert [r["class"] for r in rows] == [str(i) for i in range(10)] and sum(int(r["support"]) for r in rows) == 64
    assert json.loads((out / "metrics.json").read_text())["images"] == 64
    assert (out / "confusion_matrix.png").stat().st_size > 5_000


def test_a_dataset_that_does_not_fit_is_refused_in_one_line_or_mapped_by_data_classes(trained_classifier, cifar10_root):
    args, root = model_job_args(trained_classifier), trained_classifier["data_root"]
    with pytest.raises(ConfigError, match=r"data=cifar10 has 3x32x32 images; the model takes 1x28x28"):
        evaluate_script([*args, "data=cifar10", f"data.root={cifar10_root}"])
    # Fashion-MNIST's files have MNIST's shape but other classes: refused, unless data.classes maps them
    with pytest.raises(ConfigError, match=r"data=fashion_mnist's classes .* are not the model's"):
        evaluate_script([*args, "data=fashion_mnist", f"data.root={root}"])
    with pytest.raises(ConfigError, match=r"has 3 classes \(data.classes\); the model has 10"):
        evaluate_script([*args, "data=fashion_mnist", f"data.root={root}", "data.classes=[0,1,2]"])
    assert not evaluation_runs(trained_classifier)
    evaluate_script([*args, "data=fashion_mnist", f"data.root={root}", f"data.classes=[{','.join(map(str, range(10)))}]"])
    (tracked,) = evaluation_runs(trained_classifier)
    assert tracked.info.run_name == "evaluate-fashion_mnist" and tracked.data.params["trained_on"] == "mnist"


def test_the_command_line_needs_a_model_and_data(tmp_path):
    usage = subprocess.run([sys.executable, str(REPO / "scripts/evaluate.py")], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
    assert usage.returncode == 2 and "scripts/evaluate.py model=" in usage.stdout
    missing = subprocess.run([sys.executable, str(REPO / "scripts/evaluate.py"), "model=runs:/x"], capture_output=True,
                             text=True, cwd=tmp_path, timeout=120)
    assert missing.returncode == 1 and missing.stderr.strip() == "error: data=<name> is required: the dataset to evaluate on (conf/data)"
