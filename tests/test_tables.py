"""Paper tables (imgrec.tables, `imgrec reproduce`): rows, budgets, verdicts against the published values.

Rows train for two batches on tiny IDX data.
"""

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from scipy import stats as sp

from imgrec.config import CONF_DIR
from imgrec.errors import ConfigError
from imgrec.jobs import open_job
from imgrec.tables.report import RowResult, TableInfo, table_report, verdict
from imgrec.tables.spec import BUDGETS
from imgrec.tracking.identity import CONFIG_HASH_TAG
from imgrec.verbs import reproduce
from imgrec.verbs.reproduce import Reproduction
from tests.conftest import cli
from tests.latex import check_balanced

TABLES = sorted(p.stem for p in (CONF_DIR / "table").glob("*.yaml"))
TINY = ["trainer.accelerator=cpu", "trainer.log_every_n_steps=1", "~callbacks.progress_bar",
        "~callbacks.model_summary", "logger.log_model=false", "data.batch_size=16", "data.eval_batch_size=32",
        "data.val_size=32"]


@pytest.fixture
def home(project) -> Path:
    """A project folder with its own outputs and MLflow store."""
    return project


def reproduction(args: list[str]) -> Reproduction:
    """What `imgrec reproduce ARGS` sets up, before it trains anything."""
    job = open_job(reproduce.VERB, args)
    return Reproduction(job.cfg, job.train_overrides)


def client_of(home: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{home}/mlruns/mlflow.db")


def table_runs(home: Path, role_filter: str = "tags.`imgrec.row` != ''"):
    client = client_of(home)
    experiment = client.get_experiment_by_name("tables")
    return client.search_runs([experiment.experiment_id], role_filter)


def read_csv(path: Path) -> dict[str, dict]:
    with path.open() as f:
        return {row["row"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("table", TABLES)
def test_every_row_of_every_table_composes(table, budget, home):
    table_run = reproduction([f"table={table}", f"budget={budget}", f"paths.root={home}"])
    trained = [row for row in table_run.table.rows if row.skip is None]
    assert trained, f"table {table} has no row to train under budget {budget}"
    for row in trained:
        cfg = table_run.jobs[(row.name, 0)].cfg
        assert cfg.seed == 0 and cfg.logger.experiment_name == "tables"
    assert all(row.published is None or row.published > 0 for row in table_run.table.rows)


def test_budgets_change_the_protocol_and_rows_add_their_own(home):
    quick = reproduction(["table=resnet_cifar10", "budget=quick", "table.rows=[resnet56]", f"paths.root={home}"])
    paper = reproduction(["table=resnet_cifar10", "budget=paper", "table.rows=[resnet56]", f"paths.root={home}"])
    cfg_quick, cfg_paper = quick.jobs[("resnet56", 0)].cfg, paper.jobs[("resnet56", 0)].cfg
    assert cfg_paper.trainer.max_steps == 64000 and list(cfg_paper.scheduler.schedule.milestones) == [32000, 48000]
    assert cfg_quick.trainer.max_steps == 2000 and list(cfg_quick.scheduler.schedule.milestones) == [1000, 1500]
    assert cfg_paper.model.depth == 56 and cfg_paper.optimizer.lr == 0.1 and cfg_paper.data.augment.hflip
    fashion = reproduction(["table=fashion_mnist", "budget=quick", f"paths.root={home}"])
    skipped = {row.name: row.skip for row in fashion.table.rows if row.skip}
    assert set(skipped) == {"gru_svm", "wrn28_10", "human"} and "GPU" in skipped["wrn28_10"]


@pytest.mark.parametrize("args, message", [
    (["table=fashion_mnist", "table.rows=[mlp,nope]"], "no row nope"),
    (["table=fashion_mnist", "budget=long"], "budget must be one of paper, quick, smoke"),
    (["table=fashion_mnist", "table.seeds=0"], "table.seeds"),
    (["table=fashion_mnist", "model.no_such_key=1"], "row mlp seed 0 of table fashion_mnist: model.no_such_key: no such key"),
    (["table=fashion_mnist", "table.unit=furlongs"], "table.unit must be one of"),
    (["table=fashion_mnist", "table.entries.mlp.source=null"], "table.entries.mlp.source is not set"),
    (["table=fashion_mnist", "table.entries.mlp.published=high"], "published must be a number"),
    (["table=fashion_mnist", "table.entries.mlp.overrides=null"], "mlp needs overrides"),
])
def test_bad_input_is_a_one_line_error_before_any_training(args, message, home):
    with pytest.raises(ConfigError, match=message) as err:
        reproduction([*args, f"paths.root={home}"])
    assert "\n" not in str(err.value)


def test_a_smoke_table_is_written_and_a_second_invocation_trains_nothing(home, idx_root, monkeypatch, capsys):
    args = ["table=fashion_mnist", "budget=smoke", "table.rows=[mlp,two_conv_100k,human]", "table.seeds=2",
            f"paths.root={home}", f"data.root={idx_root}", *TINY]
    first = reproduction(args).run().markdown()

    md, table_csv = home / "outputs/tables/fashion_mnist_smoke.md", home / "outputs/tables/fashion_mnist_smoke.csv"
    assert md.read_text() == first and (home / "outputs/tables/fashion_mnist_smoke.png").stat().st_size > 0
    header = next(line for line in first.splitlines() if line.startswith("| row"))
    assert "published" in header and "ours (mean ± std)" in header and "verdict" in header
    rows = read_csv(table_csv)
    assert float(rows["mlp"]["published"]) == 0.8833 and rows["mlp"]["seeds"] == "2"
    assert 0.0 <= float(rows["mlp"]["ours_mean"]) <= 1.0 and rows["mlp"]["ours_std"] != ""
    assert float(rows["mlp"]["epochs"]) == 1.0 and float(rows["mlp"]["wall_s"]) > 0  # 2 of 2 limited batches
    assert rows["human"]["ours_mean"] == "" and rows["human"]["verdict"].startswith("context")

    runs = table_runs(home)
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert {(r.data.tags["imgrec.row"], r.data.params["seed"]) for r in runs} == {
        ("mlp", "0"), ("mlp", "1"), ("two_conv_100k", "0"), ("two_conv_100k", "1")}
    assert all(r.data.tags["imgrec.table"] == "fashion_mnist" and r.data.tags["imgrec.budget"] == "smoke"
               and len(r.data.tags[CONFIG_HASH_TAG]) == 16 for r in runs)
    (parent,) = table_runs(home, "tags.`imgrec.role` = 'table'")
    assert parent.info.status == "FINISHED" and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs)
    artifacts = {a.path for a in client_of(home).list_artifacts(parent.info.run_id)}
    assert artifacts == {"fashion_mnist_smoke.md", "fashion_mnist_smoke.tex", "fashion_mnist_smoke.csv",
                         "fashion_mnist_smoke.png"}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run should have been reused")

    with monkeypatch.context() as patch:
        patch.setattr("imgrec.train.train", no_training)
        second = reproduction(args).run().markdown()
    assert second == first and len(table_runs(home)) == 4
    assert len(table_runs(home, "tags.`imgrec.role` = 'table'")) == 1  # the same parent run, updated

    # three seeds instead of two: only seed 2 is trained
    reproduction([*args[:2], "table.rows=[mlp]", "table.seeds=3", *args[4:]]).run()
    assert sorted(r.data.params["seed"] for r in table_runs(home) if r.data.tags["imgrec.row"] == "mlp") == ["0", "1", "2"]


def test_a_row_run_with_its_data_in_another_folder_is_reused(home, idx_root, tmp_path_factory, monkeypatch):
    """data.root says where the files are, not what is trained: another machine's copy reuses the run."""
    args = ["table=fashion_mnist", "budget=smoke", "table.rows=[mlp]", f"paths.root={home}", *TINY]
    first = reproduction([*args, f"data.root={idx_root}"]).run().markdown()
    elsewhere = tmp_path_factory.mktemp("copy_of_the_data")
    for file in idx_root.iterdir():
        shutil.copy(file, elsewhere / file.name)

    def no_training(*args, **kwargs):
        raise AssertionError("the run with the data in the first folder should have been reused")

    monkeypatch.setattr("imgrec.train.train", no_training)
    assert reproduction([*args, f"data.root={elsewhere}", "data.num_workers=0"]).run().markdown() == first
    assert len(table_runs(home)) == 1
    changed = reproduction([*args, f"data.root={elsewhere}", "optimizer.lr=0.5"]).run().markdown()  # what is trained counts
    assert "should have been reused" in changed


def test_a_row_without_data_or_with_a_failure_does_not_stop_the_table(home, idx_root, monkeypatch):
    import imgrec.train

    real_train = imgrec.train.train

    def flaky_train(cfg, **kwargs):
        if cfg.model.get("hidden") is not None:  # the MLP row
            raise RuntimeError("out of luck")
        return real_train(cfg, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr("imgrec.train.train", flaky_train)
        markdown = reproduction(["table=fashion_mnist", "budget=smoke", "table.rows=[mlp,two_conv_100k]",
                                 f"paths.root={home}", f"data.root={idx_root}", *TINY]).run().markdown()
    rows = read_csv(home / "outputs/tables/fashion_mnist_smoke.csv")
    assert rows["mlp"]["verdict"] == "1 of 1 seeds failed" and "out of luck" in rows["mlp"]["detail"]
    assert rows["two_conv_100k"]["ours_mean"] != ""
    assert "RuntimeError: out of luck" in markdown

    empty = home / "no_data"
    empty.mkdir()
    reproduction(["table=classic_examples", "budget=smoke", f"paths.root={home}",
                             f"data.root={empty}", "data.download=false", *TINY]).run()
    rows = read_csv(home / "outputs/tables/classic_examples_smoke.csv")
    assert {r["verdict"] for r in rows.values()} == {"not run: data missing"}
    assert "mnist" in rows["keras_mnist_cnn"]["detail"] and "cifar10" in rows["tf_cifar10_cnn"]["detail"]
    (parent,) = table_runs(home, "tags.`imgrec.table` = 'classic_examples' and tags.`imgrec.role` = 'table'")
    assert parent.info.status == "FINISHED"


def test_verdicts_test_three_or_more_seeds_against_the_published_value():
    accuracy = TableInfo("t", "T", "test/acc", "accuracy", "paper", "", 3)
    error = TableInfo("t", "T", "test/acc", "error_percent", "quick", "", 3)

    def row(values, published=0.90, tolerance=0.01, note=None):
        return RowResult("r", "R", published, "src", tolerance, note=note, values=values)

    close = [0.895, 0.905, 0.899]
    p = sp.ttest_1samp(close, 0.90).pvalue
    assert verdict(row(close), accuracy) == (f"consistent with the published value (p = {p:.3f}, one-sample t-test "
                                             "over 3 seeds)")
    low = [0.80, 0.81, 0.79, 0.80]
    p = sp.ttest_1samp(low, 0.90).pvalue
    assert p < 0.001 and verdict(row(low, note="a different net"), accuracy, "[2]") == (
        "below it by 0.1000, p < 0.001, one-sample t-test over 4 seeds; see note [2]")
    # error in %: lower is better, so below is no shortfall; above it, a shorter protocol is named as the likely reason
    assert verdict(row([7.5, 7.4, 7.6], published=8.75), error).startswith("below it by 1.25, p = ")
    assert verdict(row([12.0, 12.2, 11.9], published=8.75), error).endswith("; shorter protocol (budget=quick)")
    # fewer than 3 seeds: no test, only the tolerance, said to be untested
    assert verdict(row([0.895, 0.905]), accuracy) == "within ±0.01 of published (2 seeds, untested)"
    assert verdict(row([0.95]), accuracy) == "above published by 0.0500 (1 seed, untested)"
    assert verdict(row([], published=8.75), error) == "no result"


def test_a_table_shows_the_interval_and_its_latex_is_balanced():
    info = TableInfo("t", "T", "test/acc", "accuracy", "quick", "5 epochs", 3)
    rows = [RowResult("a", "Net A & co", 0.90, "src [1]", 0.01, values=[0.895, 0.905, 0.899]),
            RowResult("b", "Net_B 50%", 0.92, "src", 0.01, values=[0.91])]
    report = table_report(info, rows)
    (table,) = report.tables
    low, high = sp.t.interval(0.95, 2, loc=np.mean(rows[0].values), scale=sp.sem(rows[0].values))
    data = {r["row"]: r for r in table.rows}
    assert (data["a"]["ci_low"], data["a"]["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert data["a"]["p_value"] == pytest.approx(sp.ttest_1samp(rows[0].values, 0.90).pvalue)
    assert data["b"]["p_value"] is None and math.isnan(data["b"]["ci_low"])
    assert f"[{low:.4f}, {high:.4f}]" in report.markdown()
    assert check_balanced(report.latex()) == 1 and r"Net A \& co" in report.latex()


def test_the_command_line_asks_for_a_table_or_names_the_options_in_one_line(home):
    with pytest.raises(SystemExit, match=r"^error: table=\.\.\. is required: a published table of conf/table/ \(classic"):
        cli("reproduce")
    with pytest.raises(SystemExit) as bad:
        cli("reproduce", "table=nope")
    assert bad.value.code.startswith("error: table=nope: no such option; the options are classic_examples, ")
    assert "\n" not in bad.value.code


def test_the_default_budget_is_quick(home):
    assert reproduction(["table=fashion_mnist", f"paths.root={home}"]).info.budget == "quick"


@pytest.mark.slow
def test_a_models_clean_and_robust_rows_share_its_run(home, idx_root):
    """robustness_fashion_mnist: each model trains once; its clean row reads test/acc, its robust row test/robust_acc."""
    args = ["table=robustness_fashion_mnist", "budget=smoke",
            "table.rows=[standard_clean,standard_robust,pgd_robust,pgd_autoattack]",
            f"paths.root={home}", "data=mnist", f"data.root={idx_root}", *TINY]
    reproduction(args).run()
    runs = table_runs(home)
    assert len(runs) == 2  # standard (for two rows) and PGD training (for two)
    by_method = {r.data.params["task.adversarial.method"]: r for r in runs}
    assert set(by_method) == {"None", "pgd"}
    rows = read_csv(home / "outputs/tables/robustness_fashion_mnist_smoke.csv")
    standard = by_method["None"].data.metrics
    assert float(rows["standard_clean"]["ours_mean"]) == pytest.approx(100 * standard["test/acc"])
    assert float(rows["standard_robust"]["ours_mean"]) == pytest.approx(100 * standard["test/robust_acc"])
    assert float(rows["pgd_robust"]["published"]) == 68.06
    pgd = by_method["pgd"].data.metrics
    assert float(rows["pgd_autoattack"]["ours_mean"]) == pytest.approx(100 * pgd["test/autoattack_acc"])
    assert rows["pgd_autoattack"]["published"] == ""  # ours only


def test_a_table_trains_its_prerequisites_once_and_draws_its_series(home, idx_root, monkeypatch):
    """label_efficiency: the autoencoder prerequisite is trained once per seed and its run is what the fine-tuning row
    builds on; the rows' series are drawn against labels per class; a second invocation trains nothing."""
    args = ["table=label_efficiency", "budget=smoke", "table.rows=[supervised_10,autoencoder_10,fixmatch_10]",
            f"paths.root={home}", f"data.root={idx_root}", *TINY]
    reproduction(args).run()
    runs = {r.data.tags["imgrec.row"]: r for r in table_runs(home)}
    assert set(runs) == {"autoencoder", "supervised_10", "autoencoder_10", "fixmatch_10"}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    autoencoder = runs["autoencoder"]
    assert autoencoder.data.params["model._target_"] == "imgrec.models.autoencoder.ConvAutoencoder"
    assert runs["autoencoder_10"].data.params["model.backbone.checkpoint"] == f"runs:/{autoencoder.info.run_id}"
    assert runs["fixmatch_10"].data.metrics["data/labeled_images"] == 100
    rows = read_csv(home / "outputs/tables/label_efficiency_smoke.csv")
    assert (rows["fixmatch_10"]["series"], rows["fixmatch_10"]["x"]) == ("FixMatch", "10")
    assert (home / "outputs/tables/label_efficiency_smoke_curve.png").stat().st_size > 0
    assert autoencoder.info.run_id in (home / "outputs/tables/label_efficiency_smoke.md").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run should have been reused")

    monkeypatch.setattr("imgrec.train.train", no_training)
    reproduction(args).run()
    assert len(table_runs(home)) == 4


def test_rows_shown_under_some_budgets_and_unknown_prerequisites(home):
    table = ["table=label_efficiency", f"paths.root={home}"]
    paper = {row.name for row in reproduction([*table, "budget=paper"]).table.rows}
    quick = {row.name for row in reproduction(table).table.rows}
    assert {"fixmatch_cifar10_25", "fixmatch_cifar10_400"} <= paper - quick and "fixmatch_10" in quick
    with pytest.raises(ConfigError, match="table.entries.supervised_10: run:nope names no prerequisite of "
                                          r"conf/table/label_efficiency.yaml \(prerequisites: autoencoder\)"):
        reproduction([*table, "table.entries.supervised_10.overrides=['model.backbone.checkpoint=run:nope']"])


def test_a_row_measured_against_a_prerequisite_reuses_the_standard_rows_run(home, idx_root):
    """corruptions: the relative mCE row is computed from its run and the standard run of the same seed; the standard
    prerequisite is the standard row's own run (the same config), not a second one."""
    from imgrec.robust.corruption_eval import relative_to

    # trained enough that zooming out and impulse noise cost accuracy: the relative mCE is then defined
    args = ["table=corruptions", "budget=smoke", "table.rows=[cnn_standard_mca,cnn_noise_clean,cnn_noise_rmce]",
            f"paths.root={home}", f"data.root={idx_root}", "callbacks.corruptions.corruptions=[zoom,impulse_noise]",
            "callbacks.corruptions.n=64", *TINY, "trainer.limit_train_batches=12"]
    reproduction(args).run()
    runs = {r.data.tags["imgrec.row"]: r for r in table_runs(home)}
    assert set(runs) == {"cnn_standard_mca", "cnn_noise_clean"}  # the rmce row shares the noise row's run
    rows = read_csv(home / "outputs/tables/corruptions_smoke.csv")
    expected = relative_to(runs["cnn_noise_clean"].data.metrics, runs["cnn_standard_mca"].data.metrics)
    assert float(rows["cnn_noise_rmce"]["ours_mean"]) == pytest.approx(100 * expected["test/relative_mce"])
    assert float(rows["cnn_standard_mca"]["ours_mean"]) == pytest.approx(
        100 * runs["cnn_standard_mca"].data.metrics["test/corruption_acc"])
    with pytest.raises(ConfigError, match="versus: <prerequisite>` goes with a metric measured against another run"):
        reproduction(["table=corruptions", f"paths.root={home}", "table.entries.cnn_noise_rmce.versus=null"])


def test_rows_with_a_baseline_are_judged_against_it_seed_for_seed():
    from imgrec.tables.report import against_baseline

    info = TableInfo("t", "T", "test/acc", "accuracy_percent", "quick", "", 3)

    def row(name, values, wall=60.0):
        return RowResult(name, name, None, "src", 1.0, values=values, wall_s=[wall] * len(values), baseline="plain")

    plain = row("plain", [90.0, 90.4, 89.8])
    better, worse = row("better", [91.0, 91.4, 90.9], wall=90.0), row("worse", [89.0, 89.5, 88.7])
    same = row("same", [90.1, 90.2, 89.9])
    test = sp.ttest_rel(better.values, plain.values)
    assert 0.001 < test.pvalue < 0.05 and against_baseline(better, plain, info) == (
        f"helps: +1.03 [{test.confidence_interval().low:+.2f}, {test.confidence_interval().high:+.2f}], "
        f"p = {test.pvalue:.3f}, paired t over 3 seeds; 1.50x its wall time")
    assert against_baseline(worse, plain, info).startswith("hurts: -1.00")
    assert against_baseline(same, plain, info).startswith("no detectable difference: ")
    assert against_baseline(row("one", [91.0]), plain, info) == "+1.00 (1 seed, untested); 1.00x its wall time"
    report = table_report(info, [plain, better])
    (first, second) = report.tables[0].rows
    assert second["difference"] == pytest.approx(1.0333, abs=1e-3) and second["verdict"].startswith("helps")


def test_a_row_may_run_its_own_number_of_seeds(home):
    jobs = reproduction([f"paths.root={home}", "table=recipes", "table.seeds=3"]).jobs
    assert max(s for (n, s) in jobs if n == "plain_cnn") == 2
    assert max(s for (n, s) in jobs if n == "plain_resnet20") == 0  # 1 seed at budget quick
    names = {name for name, _ in jobs}
    assert "drop_path_resnet20" in names and "drop_path_cnn" not in names
