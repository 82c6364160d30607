"""Shared fixtures: configs composed exactly as train.py composes them, rooted in a temp dir."""

import os
import shutil
import socket
import subprocess
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
def make_cfg(tmp_path, monkeypatch, empty_mlflow_db):
    """compose(overrides) -> the config train.py would get, with outputs and MLflow under tmp_path (a store whose
    tables are made: making them takes a second, copying them none)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with_empty_store(tmp_path, empty_mlflow_db)

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


# Fixtures that train a model or start a server: a test that uses one is marked `trains` (`make test-fast` skips them).
TRAINING_FIXTURES = {"make_cfg", "project", "trained_classifier", "gray_classifier", "classifier_homes",
                     "postgres_server", "postgres_url"}


def pytest_collection_modifyitems(items):
    """The slow tests (processes, servers) first: two workers (`make test`) then finish together instead of one
    waiting for the other's last long test. Otherwise in file order."""
    for item in items:
        if item.get_closest_marker("slow") or TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.trains)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def with_empty_store(home: Path, empty_mlflow_db: Path) -> None:
    """home/mlruns/mlflow.db: an empty MLflow store, unless there is one already."""
    (home / "mlruns").mkdir(exist_ok=True)
    if not (home / "mlruns" / "mlflow.db").exists():
        shutil.copy(empty_mlflow_db, home / "mlruns" / "mlflow.db")


@pytest.fixture
def project(tmp_path, monkeypatch, empty_mlflow_db) -> Path:
    """tmp_path as a project folder, the working directory, with its own (empty) MLflow store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with_empty_store(tmp_path, empty_mlflow_db)
    return tmp_path


@pytest.fixture
def mlflow_client(tmp_path, empty_mlflow_db) -> MlflowClient:
    with_empty_store(tmp_path, empty_mlflow_db)
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


PG_BIN = Path("/usr/lib/postgresql")


def postgres_bin() -> Path | None:
    found = sorted(PG_BIN.glob("*/bin/pg_ctl"))
    return found[-1].parent if found else (Path(shutil.which("pg_ctl")).parent if shutil.which("pg_ctl") else None)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server on 127.0.0.1 for the session (skipped where none can be started): its URL."""
    pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]' (SQLAlchemy's postgresql:// driver)")
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses to run as root
    root = Path(subprocess.check_output(["mktemp", "-d", "/tmp/imgrec-pg.XXXXXX"], text=True).strip())
    if as_user:
        shutil.chown(root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        subprocess.run([*as_user, bin_dir / "initdb", "-D", root / "data", "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True)
        subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", root / "data", "-l", root / "log", "-w", "-o",
                        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as err:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {err}")
    yield f"postgresql://postgres@127.0.0.1:{port}"
    subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", root / "data", "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server, request):
    """An empty database of its own on the session's PostgreSQL server."""
    import psycopg

    name = "test_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[-50:]
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{postgres_server}/{name}"


# The two classifiers every verb on a trained model is tested on end to end: (dataset, how its tiny files are written).
CLASSIFIERS = {"gray": "mnist", "rgb": "cifar10"}


def classifier_overrides(kind: str, home: Path, data: Path, *more: str) -> list[str]:
    """How the classifier of `kind` is trained (with `more` overrides): a small CNN, one short epoch."""
    return [f"paths.root={home}", *FAST, f"data={CLASSIFIERS[kind]}", f"data.root={data}", "model.channels=[8,16]",
            "model.fc=[32]", *more]


def train_classifier(kind: str, tmp_path_factory) -> dict:
    """A small CNN trained for one epoch on tiny files in the real format of CLASSIFIERS[kind], in a project folder
    of its own."""
    from imgrec.train import train

    home, data = tmp_path_factory.mktemp(f"classifier_{kind}"), tmp_path_factory.mktemp(f"classifier_{kind}_data")
    if kind == "gray":
        write_idx_dataset(data, n_train=256, n_test=64, gz=True)
    else:
        write_cifar10(data, n_per_batch=40, as_tarball=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(home)
        train(compose(classifier_overrides(kind, home, data), home / "outputs" / "run0"))
    (run,) = runs(MlflowClient(f"sqlite:///{home}/mlruns/mlflow.db"))
    return {"kind": kind, "run": run, "store": home / "mlruns" / "mlflow.db", "data_root": data, "data": CLASSIFIERS[kind],
            "in_shape": (1, 28, 28) if kind == "gray" else (3, 32, 32), "test_images": 64 if kind == "gray" else 40}


@pytest.fixture(scope="session")
def classifier_homes(tmp_path_factory):
    """kind -> its classifier, trained once per session the first time a test asks for it."""
    homes: dict[str, dict] = {}

    def get(kind: str) -> dict:
        if kind not in homes:
            homes[kind] = train_classifier(kind, tmp_path_factory)
        return homes[kind]

    return get


def in_a_store_of_its_own(home: dict, tmp_path: Path, monkeypatch) -> dict:
    """A session's classifier with its run in a copy of its store under tmp_path (the working directory): the runs
    a test logs beside it stay the test's own. Its checkpoint and data stay where the session put them."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns").mkdir(exist_ok=True)
    shutil.copy(home["store"], tmp_path / "mlruns" / "mlflow.db")
    run = home["run"]
    return {**home, "uri": f"runs:/{run.info.run_id}", "home": tmp_path,
            "tracking": f"sqlite:///{tmp_path}/mlruns/mlflow.db"}


@pytest.fixture(params=list(CLASSIFIERS))
def trained_classifier(request, classifier_homes, tmp_path, monkeypatch) -> dict:
    """Each of the two classifiers, 1-channel and 3-channel (see in_a_store_of_its_own)."""
    return in_a_store_of_its_own(classifier_homes(request.param), tmp_path, monkeypatch)


@pytest.fixture
def gray_classifier(classifier_homes, tmp_path, monkeypatch) -> dict:
    """The 1-channel classifier alone, for tests whose data is MNIST-shaped."""
    return in_a_store_of_its_own(classifier_homes("gray"), tmp_path, monkeypatch)


def model_job_args(c: dict) -> list[str]:
    """What a verb that takes `model=<uri>` needs to find the trained_classifier and write beside it."""
    return [f"model={c['uri']}", f"paths.root={c['home']}", f"logger.tracking_uri={c['tracking']}"]


def cli(verb: str, *args: str):
    """`imgrec VERB args` in this process: what it prints goes to capsys, a user error is SystemExit("error: ...")
    as at the console; returns the verb's report (None for train)."""
    from imgrec.cli import run

    return run(verb, list(args))


def free_port() -> int | None:
    """A free TCP port on loopback for a test server, or None where none can be bound."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    except OSError:
        return None


def wait_for(server, probe, what: str, timeout: float = 120):
    """Call `probe()` until it answers (not None; a refused connection counts as no answer), failing with
    the server's stderr if the server process exits first."""
    import time

    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            pytest.fail(f"{what} exited: {server.stderr.read()[-2000:]}")
        try:
            answer = probe()
            if answer is not None:
                return answer
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} did not answer within {timeout:.0f} s")
