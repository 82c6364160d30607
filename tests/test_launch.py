"""Launchers: a table's and a cross-validation's runs trained by local worker processes or submitit jobs, the same
table as the driver's own loop, a killed job submitted again and resumed. The 2-core machine thrashes under two
trainings at once: the jobs here are tiny (a few batches of tiny files)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from imgrec.jobs import open_job
from imgrec.verbs import reproduce
from imgrec.verbs.reproduce import Reproduction
from tests.conftest import cli, runs

TINY = ["trainer.accelerator=cpu", "trainer.log_every_n_steps=1", "~callbacks.progress_bar",
        "~callbacks.model_summary", "logger.log_model=false", "data.batch_size=16", "data.eval_batch_size=32",
        "data.val_size=32", "trainer.deterministic=true"]
ROWS = ["table=fashion_mnist", "budget=smoke", "table.rows=[mlp,two_conv_100k]", "table.seeds=2"]


def table(home: Path, idx_root: Path, *launcher: str) -> dict[str, dict]:
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # MLflow exports the last store it used: each table its own
    job = open_job(reproduce.VERB, [*ROWS, f"paths.root={home}", f"data.root={idx_root}", *TINY, *launcher])
    Reproduction(job.cfg, job.train_overrides).run()
    import csv

    rows = list(csv.DictReader((home / "outputs/tables/fashion_mnist_smoke.csv").open()))
    return {r["row"]: r for r in rows}


def table_runs(home: Path) -> list:
    return [r for r in runs(MlflowClient(f"sqlite:///{home}/mlruns/mlflow.db"), "tables")
            if r.data.tags.get("imgrec.role") != "table"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [["launcher=processes", "launcher.workers=2"],
                                      ["launcher=submitit_local", "launcher.workers=2"]])
def test_a_launcher_trains_every_row_once_and_writes_the_tables_rows(launcher, tmp_path, idx_root, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local, launched = tmp_path / "local", tmp_path / "launched"
    expected = table(local, idx_root)
    got = table(launched, idx_root, *launcher)
    trained = table_runs(launched)
    assert len(trained) == 4 and {r.info.status for r in trained} == {"FINISHED"}  # once per row and seed
    assert {(r.data.tags["imgrec.row"], r.data.params["seed"]) for r in trained} == {
        ("mlp", "0"), ("mlp", "1"), ("two_conv_100k", "0"), ("two_conv_100k", "1")}
    for name, row in expected.items():  # the same table: the same configs, seeds and metrics
        assert got[name]["seeds"] == row["seeds"] == "2"
        assert float(got[name]["ours_mean"]) == pytest.approx(float(row["ours_mean"]), abs=0.02)
    pids = {r.data.tags["imgrec.pid"] for r in trained}
    assert str(os.getpid()) not in pids  # trained by the workers, not the driver
    table(launched, idx_root, *launcher)  # again: nothing left to train
    assert len(table_runs(launched)) == 4


@pytest.mark.slow
def test_a_killed_submitit_job_is_submitted_again_and_resumes_its_run(tmp_path, idx_root):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    driver = subprocess.Popen(
        [Path(sys.executable).parent / "imgrec", "reproduce", "table=fashion_mnist", "budget=smoke", "table.rows=[mlp]",
         "launcher=submitit_local", f"paths.root={tmp_path}", f"data.root={idx_root}", *TINY,
         "trainer.max_epochs=40", "trainer.limit_train_batches=4"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed, deadline = None, time.time() + 300
    try:
        while killed is None and time.time() < deadline and driver.poll() is None:
            time.sleep(0.5)
            checkpoints = list((tmp_path / "outputs/tables/runs").glob("**/checkpoints/last.ckpt"))
            running = [r for r in table_runs(tmp_path) if r.info.status == "RUNNING"] if checkpoints else []
            if running:
                killed = running[0]
                os.kill(int(killed.data.tags["imgrec.pid"]), signal.SIGKILL)  # the job's process, mid-run
        out, _ = driver.communicate(timeout=600)
    finally:
        driver.kill()
    assert killed is not None, "the job finished before it could be killed"
    assert driver.returncode == 0, out[-3000:]
    assert "submitted again" in out
    (run,) = table_runs(tmp_path)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"  # the same run, resumed
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert client.get_metric_history(run.info.run_id, "fit/epochs")[-1].value == 40


@pytest.mark.parametrize("args, message", [
    (["launcher=processes", "launcher.workers=0"], "launcher.workers: a positive number of workers, got 0"),
    (["launcher=slurm"], "launcher=slurm: sbatch is not on this machine's PATH"),
])
def test_a_launcher_that_cannot_work_is_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(SystemExit, match=message):
        cli("reproduce", *ROWS, f"paths.root={tmp_path}", *args)


def test_slurm_refuses_a_store_the_nodes_cannot_share(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (fake / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit, match="the nodes cannot share safely; run `mlflow server`"):
        cli("reproduce", *ROWS, f"paths.root={tmp_path}", "launcher=slurm")


@pytest.mark.slow
def test_a_sweep_on_two_worker_processes_shares_one_study_and_reports_it(tmp_path, idx_root, monkeypatch):
    import optuna

    from tests.test_sweep import TINY as TRIAL

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    report = cli("sweep", "sweep=loss", "sweep.n_trials=4", "sweep.study_name=loss4", f"sweep.storage={storage}",
                 "launcher=processes", "launcher.workers=2", f"paths.root={tmp_path}", f"data.root={idx_root}", *TRIAL)
    study = optuna.load_study(study_name="loss4", storage=storage)
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 4 and not report.failures  # n_trials in all, not per worker
    trained = [r for r in runs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db"), "imgrec")
               if "optuna.trial_number" in r.data.tags]
    assert len(trained) == 4 and str(os.getpid()) not in {r.data.tags["imgrec.pid"] for r in trained}  # by workers
    assert "Which training loss" in (tmp_path / "outputs/sweeps/loss4/answer.md").read_text()
