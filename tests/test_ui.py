"""The MLflow UI in a real browser: headless Chromium renders the runs page of a store holding a training run,
a sweep and a cross-validation, and the run names and the Dataset column are in what it shows; the experiment's
page at the address imgrec prints shows the training runs, not MLflow 3's GenAI overview."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from imgrec.train import train
from imgrec.verbs.cv import CrossValidation
from tests.conftest import FAST, free_port, wait_for
from tests.test_sweep import run_sweep

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install -y chromium)")]
TINY = [*FAST, "data=mnist", "model.channels=[8]", "model.fc=[16]", "trainer.limit_train_batches=2",
        "logger.log_model=true"]


def chromium(url: str, *args: str) -> str:
    """What headless Chromium shows at `url` once the page's scripts have run: its DOM (`--dump-dom`)."""
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--virtual-time-budget=30000", "--window-size=1600,1000", *args, url],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_runs_page_shows_the_runs_and_their_dataset(make_cfg, idx_root, tmp_path, monkeypatch):
    common = [f"data.root={idx_root}", f"paths.root={tmp_path}"]
    train(make_cfg(*TINY, *common, fast=False))
    run_sweep(["sweep=loss", "sweep.n_trials=1", "sweep.study_name=ui", f"sweep.storage=sqlite:///{tmp_path}/o.db",
                      *TINY, *common])
    CrossValidation(2, [*TINY, *common]).run()
    store = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    experiment = MlflowClient(store).get_experiment_by_name("imgrec").experiment_id

    port = free_port()
    if port is None:
        pytest.skip("no loopback port to bind")
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen([bin_dir / "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                               "--port", str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    try:
        import requests

        wait_for(server, lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=5).ok or None, "mlflow ui")
        # the page a run's summary prints: MLflow 3.17's UI takes its mode from its GenAI / Model-training switch (GenAI
        # by default), not from the experiment's kind; the address says the mode, and the page lists the training runs
        first = chromium(f"http://127.0.0.1:{port}/#/experiments/{experiment}?workflowType=machine_learning",
                         "--dump-dom")
        url = f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs"
        dom = chromium(url, "--dump-dom")
        screenshot = tmp_path / "runs.png"
        chromium(url, f"--screenshot={screenshot}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    tags = MlflowClient(store).get_experiment(experiment).tags
    assert tags.get("mlflow.experimentKind") == "custom_model_development"
    assert "cnn-mnist" in first and "Token Usage" not in first, "the experiment's page does not list its runs"
    for name in ("cnn-mnist", "sweep-ui", "cv-2fold-"):  # a run, the sweep's parent, the cross-validation's parent
        assert name in dom, f"{name} is not on the runs page"
    assert "Dataset" in dom and "mnist" in dom  # the Dataset column and the runs' dataset input
    assert screenshot.stat().st_size > 20_000
    if os.environ.get("IMGREC_UI_SCREENSHOT"):  # keep it to look at: IMGREC_UI_SCREENSHOT=/path/to/runs.png
        shutil.copy(screenshot, os.environ["IMGREC_UI_SCREENSHOT"])
