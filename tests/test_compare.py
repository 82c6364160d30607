"""`imgrec compare`: groups of finished runs, their intervals, the test between every two groups and its verdict,
checked against scipy and statsmodels on the same numbers; hand-made MLflow runs, and real ones on a 1-channel and
a 3-channel classifier."""

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from scipy import stats as sp
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from imgrec.tracking import predictions
from imgrec.tracking.identity import CHOICE_TAG, RECIPE_HASH_TAG, choice_tag, choice_tags
from tests.conftest import classifier_overrides, cli, runs
from tests.latex import check_balanced

CNN = {0: 0.912, 1: 0.905, 2: 0.918, 3: 0.909, 4: 0.915}
KERAS = {0: 0.901, 1: 0.899, 2: 0.907, 3: 0.896, 4: 0.904}


@pytest.fixture
def store(project) -> tuple[MlflowClient, str, str]:
    """(client, its tracking override, an experiment id) in a project of its own."""
    uri = f"sqlite:///{project}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    return client, f"logger.tracking_uri={uri}", client.create_experiment("study")


def make_run(client, experiment_id, model: str, seed: int, acc: float | None, data: str = "fashion_mnist",
             curve=(0.80, 0.86, 0.85), kept: predictions.Predictions | None = None, folder: Path | None = None) -> str:
    """A finished run as `imgrec train model=MODEL seed=SEED` leaves it: choice tag, params, metrics, predictions."""
    run = client.create_run(experiment_id, run_name=f"{model}-{data}",
                            tags={RECIPE_HASH_TAG: f"{model}-{data}", CHOICE_TAG + "model": model})
    run_id = run.info.run_id
    for key, value in {"seed": seed, "data.name": data, "model.channels": {"cnn": "[32, 64]"}.get(model, "[16]"),
                       "optimizer.lr": 0.001, "paths.root": f"/somewhere/{seed}"}.items():
        client.log_param(run_id, key, value)
    if acc is not None:
        client.log_metric(run_id, "test/acc", acc)
    for step, value in enumerate(curve):
        client.log_metric(run_id, "val/acc", value + seed * 0.001, step=step)
    if kept is not None:
        (folder / run_id).mkdir()
        client.log_artifact(run_id, str(predictions.save(folder / run_id / predictions.FILE, kept.pred, kept.label)))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def read(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def folder_of(capsys) -> Path:
    """The folder the console's last line names."""
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.match(r"^(\S*outputs/compare/[0-9a-f]{32}) \(MLflow run [0-9a-f]{32}\)$", last)
    assert match, last
    return Path(match.group(1))


def test_two_models_over_shared_seeds_get_the_paired_t_test_and_a_verdict(store, capsys):
    client, tracking, experiment = store
    for seed in CNN:
        make_run(client, experiment, "cnn", seed, CNN[seed])
        make_run(client, experiment, "keras_cnn", seed, KERAS[seed])
    report = cli("compare", tracking, "experiment=study", "group_by=model")
    folder = folder_of(capsys)
    groups = {row["group"]: row for row in read(folder / "groups.csv")}
    for name, values in (("cnn", list(CNN.values())), ("keras_cnn", list(KERAS.values()))):
        low, high = sp.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sp.sem(values))
        row = groups[name]
        assert int(row["n"]) == 5 and float(row["mean"]) == pytest.approx(np.mean(values))
        assert float(row["std"]) == pytest.approx(np.std(values, ddof=1))
        assert (float(row["ci_low"]), float(row["ci_high"])) == (pytest.approx(low), pytest.approx(high))
        assert int(row["best_epoch"]) == 2 and float(row["last"]) == pytest.approx(0.85 + 0.002)  # mean over seeds
    (pair,) = read(folder / "pairs.csv")
    reference = sp.ttest_rel(list(CNN.values()), list(KERAS.values()))  # paired by seed
    assert (pair["a"], pair["b"], pair["test"]) == ("cnn", "keras_cnn", "paired_t")
    assert float(pair["p_value"]) == pytest.approx(reference.pvalue) == pytest.approx(float(pair["p_adjusted"]))
    low, high = reference.confidence_interval(0.95)
    assert (float(pair["ci_low"]), float(pair["ci_high"])) == (pytest.approx(low), pytest.approx(high))
    assert float(pair["diff"]) == pytest.approx(np.mean(list(CNN.values())) - np.mean(list(KERAS.values())))
    assert reference.pvalue < 0.05 and pair["verdict"].startswith("cnn is better than keras_cnn by 1.04 pp, 95% CI [+")
    assert [r["model.channels"] for r in read(folder / "params.csv")] == ["[32, 64]", "[16]"]  # what differs only
    assert check_balanced((folder / "report.tex").read_text()) == 3
    assert {"report.md", "curves.png"} <= {p.name for p in folder.iterdir()}
    assert "cnn is better than keras_cnn" in (folder / "report.md").read_text() == report.markdown()
    driver = client.get_run(folder.name)
    assert driver.info.status == "FINISHED" and driver.data.tags["imgrec.role"] == "compare"
    assert {"groups.csv", "pairs.csv", "report.tex", "curves.png"} <= {a.path for a in client.list_artifacts(folder.name)}


def test_three_groups_without_shared_seeds_get_welch_and_holm(store, capsys):
    client, tracking, experiment = store
    values = {"cnn": [0.91, 0.92, 0.915], "mlp": [0.88, 0.885, 0.87, 0.875], "lenet5": [0.905, 0.90, 0.915]}
    for model, accs in values.items():
        for i, acc in enumerate(accs):
            make_run(client, experiment, model, {"cnn": 0, "mlp": 10, "lenet5": 20}[model] + i, acc)  # no shared seeds
    cli("compare", tracking, "experiment=study", "group_by=model", "interval=bootstrap")
    folder = folder_of(capsys)
    assert [r["group"] for r in read(folder / "groups.csv")] == ["cnn", "lenet5", "mlp"]  # best first
    pairs = read(folder / "pairs.csv")
    assert {r["test"] for r in pairs} == {"welch"} and len(pairs) == 3
    raw = [sp.ttest_ind(values[r["a"]], values[r["b"]], equal_var=False).pvalue for r in pairs]
    assert [float(r["p_value"]) for r in pairs] == pytest.approx(raw)
    assert [float(r["p_adjusted"]) for r in pairs] == pytest.approx(list(multipletests(raw, method="holm")[1]))
    for row in pairs:
        assert ("better" in row["verdict"]) == (float(row["p_adjusted"]) < 0.05), row
    assert any(float(r["p_adjusted"]) < 0.05 for r in pairs) and any(float(r["p_adjusted"]) >= 0.05 for r in pairs)
    assert {r["interval"] for r in read(folder / "groups.csv")} == {"bootstrap"}


def test_two_single_runs_are_compared_image_by_image_by_mcnemar(store, capsys, tmp_path):
    client, tracking, experiment = store
    rng = np.random.default_rng(1)
    label = rng.integers(0, 10, 1000)
    right_a, right_b = rng.random(1000) < 0.92, rng.random(1000) < 0.89
    a = predictions.Predictions(np.where(right_a, label, (label + 1) % 10), label)
    b = predictions.Predictions(np.where(right_b, label, (label + 3) % 10), label)
    ids = [make_run(client, experiment, "cnn", 0, a.accuracy, kept=a, folder=tmp_path),
           make_run(client, experiment, "mlp", 0, b.accuracy, kept=b, folder=tmp_path)]
    cli("compare", tracking, f"runs=[{ids[0]},{ids[1]}]")
    folder = folder_of(capsys)
    (pair,) = read(folder / "pairs.csv")
    table = [[int((right_a & right_b).sum()), int((right_a & ~right_b).sum())],
             [int((~right_a & right_b).sum()), int((~right_a & ~right_b).sum())]]
    assert pair["test"] == "mcnemar" and pair["a"] == f"cnn-fashion_mnist ({ids[0][:8]})"
    assert float(pair["p_value"]) == pytest.approx(sm_mcnemar(table, exact=True).pvalue)
    assert float(pair["diff"]) == pytest.approx(right_a.mean() - right_b.mean())
    assert (folder / "confusion.png").stat().st_size > 0


def test_group_by_recipe_aggregates_the_seeds_of_one_config(store, capsys):
    client, tracking, experiment = store
    for seed, acc in enumerate([0.80, 0.90, 1.00]):
        make_run(client, experiment, "cnn", seed, acc)
    for seed, acc in enumerate([0.95, 0.97]):
        make_run(client, experiment, "mlp", seed, acc)
    cli("compare", tracking, "experiment=study", "group_by=recipe")
    mlp, cnn = read(folder_of(capsys) / "groups.csv")
    assert mlp["group"].startswith("mlp-fashion_mnist (") and (mlp["n"], mlp["seeds"]) == ("2", "0 1")
    assert float(mlp["mean"]) == pytest.approx(0.96) and float(mlp["std"]) == pytest.approx(np.std([0.95, 0.97], ddof=1))
    assert float(cnn["mean"]) == pytest.approx(0.90) and cnn["n"] == "3"


@pytest.mark.parametrize(("setup", "args", "message"), [
    ("one_run_group", ["group_by=model"],
     r"^error: group mlp has one run; Welch's t-test needs at least two runs per group"),
    ("two_datasets", ["group_by=model"], r"^error: the runs were trained on different datasets \(fashion_mnist: "),
    ("lacking_metric", ["group_by=model"], r"^error: metric test/acc: 1 runs lack it: mlp-fashion_mnist \("),
    ("shared", ["group_by=optimizer"], r"^error: group_by=optimizer: 4 of 4 runs have no such config key or option"),
    ("shared", ["group_by=model", "test=mcnemar"], r"^error: test=mcnemar compares two single runs; cnn has 2"),
    ("shared", ["runs=[nosuchrun]"], r"^error: runs: no run 'nosuchrun'"),
    ("shared", ["runs=[a,b]", "experiment=study"], r"^error: give runs=\[\.\.\.\] or experiment=/filter=, not both"),
    ("shared", ["test=ttest"], r"^error: test must be one of auto, welch, paired_t, wilcoxon, mcnemar, got 'ttest'"),
    ("unpaired", ["group_by=model", "test=wilcoxon"], r"^error: test=wilcoxon pairs runs by seed: cnn \(seeds 0, 1\)"),
    ("shared", ["group_by=model", "experiment=nope"], r"^error: no MLflow experiment 'nope'"),
    ("many", [], r"^error: 21 groups are too many to test pair by pair \(at most 20\): group the runs"),
])
def test_bad_input_is_one_line_and_leaves_no_driver_run(store, setup, args, message):
    client, tracking, experiment = store
    if setup in ("shared", "unpaired", "one_run_group", "lacking_metric", "two_datasets"):
        for seed in (0, 1):
            make_run(client, experiment, "cnn", seed, 0.9 + seed / 100)
        extra = {"one_run_group": [(0, 0.8, "fashion_mnist")], "lacking_metric": [(0, None, "fashion_mnist"),
                                                                                 (1, 0.8, "fashion_mnist")],
                 "two_datasets": [(0, 0.8, "mnist"), (1, 0.8, "mnist")], "unpaired": [(5, 0.8, "fashion_mnist"),
                                                                                      (6, 0.8, "fashion_mnist")]}
        for seed, acc, data in extra.get(setup, [(0, 0.85, "fashion_mnist"), (1, 0.86, "fashion_mnist")]):
            make_run(client, experiment, "mlp", seed, acc, data=data)
    for seed in range(21 if setup == "many" else 0):  # each run its own group
        make_run(client, experiment, "cnn", seed, 0.9)
    before = len(runs(client, "study"))
    with pytest.raises(SystemExit, match=message) as error:
        cli("compare", tracking, *(["experiment=study"] if not any(a.startswith(("runs", "experiment")) for a in args)
                                   else []), *args)
    assert "\n" not in str(error.value.code)
    assert len(runs(client, "study")) == before  # no compare run was opened


@pytest.mark.slow
def test_two_real_runs_keep_their_predictions_and_compare_on_each_classifier(trained_classifier, capsys):
    """1-channel and 3-channel: a second seed trained beside the session's run, then compared by McNemar."""
    from imgrec.config import compose
    from imgrec.train import train

    c = trained_classifier
    home = c["home"]
    train(compose(classifier_overrides(c["kind"], home, c["data_root"], "seed=1"), home / "outputs" / "run1"))
    client = MlflowClient(c["tracking"])
    first, second = runs(client)
    for run in (first, second):
        kept = predictions.of_run(client, run.info.run_id)
        assert len(kept.label) == c["test_images"] and kept.accuracy == pytest.approx(run.data.metrics["test/acc"])
        assert kept.prob is not None and ((0 < kept.prob) & (kept.prob <= 1)).all()
        assert run.data.tags[CHOICE_TAG + "model"] == "cnn" and run.data.tags[CHOICE_TAG + "data"] == c["data"]
    cli("compare", f"logger.tracking_uri={c['tracking']}", f"paths.root={home}",
        f"runs=[{first.info.run_id},{second.info.run_id}]")
    folder = folder_of(capsys)
    (pair,) = read(folder / "pairs.csv")
    assert pair["test"] == "mcnemar" and 0 <= float(pair["p_value"]) <= 1
    assert {"confusion.png", "curves.png", "report.tex"} <= {p.name for p in folder.iterdir()}


def test_choice_tags_name_groups_as_overrides_do_in_names_mlflow_takes():
    tags = choice_tags({"model": "dcgan", "optimizer@task.optimizer_d": "adam", "hydra/launcher": "basic",
                        "debug": None})
    assert tags == {"imgrec.choice.model": "dcgan", "imgrec.choice.optimizer:task.optimizer_d": "adam"}
    assert choice_tag("optimizer@task.optimizer_d") in tags  # what group_by=optimizer@task.optimizer_d looks up


@pytest.mark.parametrize("metric, values, unit", [("test/acc", [0.9, 0.8], "pp"), ("test/corruption_acc", [0.7, 0.72], "pp"),
                                                  ("val/f1", [0.5], "pp"), ("test/loss", [0.3, 0.2], ""),
                                                  ("test/acc", [0.9, 1.5], "")])
def test_accuracies_of_every_kind_are_compared_in_percentage_points(metric, values, unit):
    from imgrec.verbs.compare import Group, scale_of

    assert scale_of(metric, [Group("a", runs=[], values=values)]) == ((100.0, "pp") if unit else (1.0, ""))
