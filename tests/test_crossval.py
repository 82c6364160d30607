"""k-fold cross-validation (`imgrec cv`, imgrec.verbs.cv): the folds, the parent run and its summary, resuming,
and cross-validated sweep trials."""

import csv

import pytest
import torch
from mlflow import MlflowClient

from imgrec.data.splits import stratified_fold
from imgrec.errors import ConfigError
from imgrec.sweep.report import counted_trials
from imgrec.verbs.cv import CV_TAG, FOLD_TAG, CrossValidation
from tests.conftest import cli
from tests.test_sweep import run_sweep

TINY = ["data=mnist", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0", "trainer.accelerator=cpu",
        "~callbacks.progress_bar", "~callbacks.model_summary", "logger.log_model=false", "data.batch_size=16",
        "data.eval_batch_size=32", "model.channels=[8]", "model.fc=[16]"]


@pytest.fixture
def home(project, idx_root):
    """A project folder with its own MLflow store; returns the common overrides."""
    return [f"paths.root={project}", f"data.root={idx_root}", *TINY]


def test_stratified_folds_cover_the_training_set_once_and_keep_class_proportions():
    labels = torch.arange(10).repeat_interleave(30)[torch.randperm(300, generator=torch.Generator().manual_seed(1))]
    held_out = [stratified_fold(labels, 5, fold, split_seed=0) for fold in range(5)]
    validation = torch.cat([val for _, val in held_out])
    assert sorted(validation.tolist()) == list(range(300))  # every image validated on exactly once
    for train_idx, val_idx in held_out:
        assert set(train_idx.tolist()).isdisjoint(val_idx.tolist()) and len(train_idx) + len(val_idx) == 300
        assert torch.bincount(labels[val_idx], minlength=10).tolist() == [6] * 10  # 30 per class / 5 folds
    again, other = stratified_fold(labels, 5, 0, split_seed=0), stratified_fold(labels, 5, 0, split_seed=1)
    assert torch.equal(again[1], held_out[0][1]) and not torch.equal(other[1], held_out[0][1])
    with pytest.raises(ConfigError, match="data.folds=31 must be at least 2 and at most the smallest class's 30"):
        stratified_fold(labels, 31, 0, 0)
    with pytest.raises(ConfigError, match=r"data.fold=5 must be in 0..4"):
        stratified_fold(labels, 5, 5, 0)


def test_cross_validation_runs_each_fold_under_one_parent_and_summarizes_them(home, tmp_path, monkeypatch):
    mean, report = CrossValidation(2, home).run()
    markdown = report.markdown()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("imgrec").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`imgrec.role` = 'cv'")
    folds = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert parent.info.status == "FINISHED" and sorted(f.data.tags[FOLD_TAG] for f in folds) == ["0", "1"]
    assert all(f.info.status == "FINISHED" and f.data.tags[CV_TAG] == parent.data.tags[CV_TAG] for f in folds)
    assert {f.data.params["data.fold"] for f in folds} == {"0", "1"} and folds[0].data.params["data.folds"] == "2"
    accs = [f.data.metrics["val/acc"] for f in folds]
    assert parent.data.metrics["val/acc_mean"] == pytest.approx(sum(accs) / 2)
    assert parent.data.metrics["test/acc_std"] == pytest.approx(abs(folds[0].data.metrics["test/acc"] -
                                                                    folds[1].data.metrics["test/acc"]) / 2 ** 0.5)
    assert mean == pytest.approx(parent.data.metrics["val/acc_best_mean"])  # the optimized metric's mean
    assert "| mean ± std |" in markdown
    out = tmp_path / "outputs" / "cv" / parent.data.tags[CV_TAG]
    with (out / "cv.csv").open() as f:
        assert [row["fold"] for row in csv.DictReader(f)] == ["0", "1"]
    assert (out / "cv.png").stat().st_size > 5_000
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"cv.md", "cv.tex", "cv.csv", "cv.png"}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr("imgrec.train.train", no_training)
    again, _ = CrossValidation(2, home).run()  # resumes: both folds are reused, the same parent is updated
    assert again == pytest.approx(mean)
    assert len(client.search_runs([experiment], "tags.`imgrec.role` = 'cv'")) == 1


def test_bad_folds_are_one_line_before_any_run(home, tmp_path):
    with pytest.raises(ConfigError, match="folds must be an integer >= 2"):
        CrossValidation(1, home)
    with pytest.raises(SystemExit, match="^error: folds must be an integer >= 2, got 'abc'$"):
        cli("cv", "folds=abc", *home)
    with pytest.raises(SystemExit, match="^error: fold 0: trainer.max_epochs must be an integer"):
        cli("cv", "folds=2", *home, "trainer.max_epochs=abc")
    assert not list((tmp_path / "outputs").glob("cv/*"))


def test_the_experiment_key_names_the_mlflow_experiment_not_a_preset(home, tmp_path):
    report = cli("cv", "folds=2", "experiment=cv_check", *home)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("cv_check").experiment_id
    assert len(client.search_runs([experiment])) == 3 and report.run_id  # the parent and its two folds


def test_a_sweep_can_optimize_the_mean_over_folds(home, tmp_path):
    study = run_sweep(["sweep=loss", "sweep.n_trials=1", "sweep.folds=2", "sweep.study_name=cvloss",
                       f"sweep.storage=sqlite:///{tmp_path}/optuna.db", *home])
    (trial,) = counted_trials(study.get_trials())
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("imgrec").experiment_id
    (cv_run,) = client.search_runs([experiment], "tags.`imgrec.role` = 'cv'")
    assert cv_run.data.tags["optuna.trial_number"] == "0" and "mlflow.parentRunId" in cv_run.data.tags
    assert trial.value == pytest.approx(cv_run.data.metrics["val/acc_best_mean"])
    assert len(client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{cv_run.info.run_id}'")) == 2
