"""Shared fixtures: configs composed exactly as train.py composes them, rooted in a temp dir."""

import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from omegaconf import DictConfig

from imgrec.config import compose
from tests.dataset_files import write_cifar10, write_idx_dataset

REPO = Path(__file__).resolve().parents[1]

# Tiny but complete runs: a few batches per stage, one epoch, no progress bar noise.
FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "~callbacks.progress_bar",
    "~callbacks.model_summary",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "data.val_size=32",
]


@pytest.fixture
def idx_root(tmp_path_factory) -> Path:
    """MNIST-format IDX files (gz) with learnable class patterns."""
    root = tmp_path_factory.mktemp("idx")
    write_idx_dataset(root, n_train=256, n_test=64, gz=True)
    return root


@pytest.fixture
def cifar10_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar10(root, n_per_batch=40, as_tarball=True)
    return root


@pytest.fixture
def make_cfg(tmp_path, monkeypatch):
    """compose(overrides) -> the config train.py would get, with outputs and MLflow under tmp_path."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)

    def make(*overrides: str, fast: bool = True) -> DictConfig:
        run_dir = tmp_path / "outputs" / f"run{len(list(tmp_path.glob('outputs/run*')))}"
        return compose([f"paths.root={tmp_path}", *(FAST if fast else []), *overrides], run_dir)

    return make


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow store with its tables made: creating them takes seconds, copying it none."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_client(tmp_path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")


def runs(client: MlflowClient, experiment: str = "imgrec"):
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def train_py(*args: str, cwd: Path, timeout: int = 300, env: dict | None = None):
    """Run `python train.py args` as a user would; returns the CompletedProcess."""
    import os
    import subprocess

    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
