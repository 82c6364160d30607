"""No run lost: concurrent starts on a fresh store, kill -9 at any point, exact resume, damaged checkpoints,
a tracking server on PostgreSQL with parallel writers, and the torchrun launcher."""

import errno
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from mlflow import MlflowClient
from omegaconf import DictConfig

from imgrec.errors import CheckpointWriteError, one_line
from imgrec.tasks.classification import ClassificationTask
from imgrec.tracking import store
from imgrec.train import train
from tests.conftest import FAST, REPO, runs, train_py
from tests.killer import POINTS

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # eight processes on two cores


def client(home: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{home}/mlruns/mlflow.db")


def launch(args: list[str], cwd: Path, env: dict[str, str] | None = None, script: str = "train.py") -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | ONE_THREAD | (env or {})
    return subprocess.Popen([sys.executable, str(REPO / script), *args], cwd=cwd, env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_all(processes: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str]]:
    results = []
    for process in processes:
        _, err = process.communicate(timeout=timeout)
        results.append((process.returncode, err))
    return results


@pytest.mark.slow
def test_eight_processes_start_together_on_a_fresh_store(tmp_path):
    processes = [launch(["data=digits", "model=mlp", f"seed={seed}", *FAST], tmp_path) for seed in range(8)]
    for code, err in finish_all(processes):
        assert code == 0, err[-2000:]
    finished = runs(client(tmp_path))
    assert len(finished) == 8 and {r.info.status for r in finished} == {"FINISHED"}
    assert all("test/acc" in r.data.metrics for r in finished)


# -- kill -9 -------------------------------------------------------------------------------------------

KILLABLE = [*FAST, "trainer.max_epochs=2", "+callbacks.killer._target_=tests.killer.KillAt"]


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_kill_9_at_any_point_leaves_no_running_run_and_resume_finishes_it(point, tmp_path, idx_root, caplog, make_cfg):
    args = [f"data.root={idx_root}", *KILLABLE]
    killed = train_py(*args, cwd=tmp_path, env={"IMGREC_TEST_KILL_AT": point})
    assert killed.returncode == -9, killed.stderr[-2000:]
    (orphan,) = runs(client(tmp_path))
    assert orphan.info.status == "RUNNING"  # nothing in the killed process could end it
    assert orphan.data.tags[store.PID_TAG] and orphan.data.tags[store.HOST_TAG] == platform.node()

    # Any command that opens the store ends it (every verb opens it with open_store, here from this process).
    with caplog.at_level("WARNING", logger="imgrec.tracking.store"):
        store.open_store(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert "left RUNNING" in caplog.text
    (ended,) = runs(client(tmp_path))
    assert ended.info.status == "KILLED" and "is gone" in ended.data.tags[store.ENDED_BY_TAG]

    # The same command with ckpt_path=last (here in this process: the same config, so the same config hash).
    with caplog.at_level("INFO", logger="imgrec"):
        train(make_cfg(*args, "ckpt_path=last", fast=False))  # args hold FAST already
    statuses = {r.info.run_id: r.info.status for r in runs(client(tmp_path))}
    if point == "data":  # killed before its first checkpoint: it stays KILLED, a new run does the work
        assert "interrupted before it wrote a checkpoint" in caplog.text
        assert statuses[orphan.info.run_id] == "KILLED" and sorted(statuses.values()) == ["FINISHED", "KILLED"]
    else:  # the same run id continues from its last checkpoint and finishes
        assert statuses == {orphan.info.run_id: "FINISHED"}
        steps = [m.step for m in client(tmp_path).get_metric_history(orphan.info.run_id, "val/acc")]
        assert len(set(steps)) == 2 and "test/acc" in client(tmp_path).get_run(orphan.info.run_id).data.metrics


def test_orphans_are_told_apart_from_live_runs():
    now = time.time()
    mine = store.process_tags()
    assert store.orphan_reason(mine, now) is None  # this very process
    assert store.orphan_reason({}, now) is None  # not opened by imgrec: not ours to end
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        gone.wait()
    dead = {**mine, store.PID_TAG: str(gone.pid)}
    assert "is gone" in store.orphan_reason(dead, now)
    reused = {**mine, store.PID_START_TAG: "1"}  # this pid, but another process started under it before
    assert "belongs to another process" in store.orphan_reason(reused, now)
    elsewhere = {**mine, store.HOST_TAG: "another-host"}
    assert store.orphan_reason(elsewhere, now) is None  # its heartbeat is fresh
    assert "no heartbeat" in store.orphan_reason(elsewhere, now + store.HEARTBEAT_STALE_S + 60)


def test_a_running_run_beats_its_heartbeat(mlflow_client):
    experiment = mlflow_client.create_experiment("beats")
    run_id = mlflow_client.create_run(experiment).info.run_id
    with store.heartbeat(mlflow_client, run_id, interval=0.2):
        time.sleep(0.7)
    first = int(mlflow_client.get_run(run_id).data.tags[store.HEARTBEAT_TAG])
    assert abs(first - time.time()) < 5


# -- exact resume --------------------------------------------------------------------------------------

AUGMENTED = ["trainer.max_epochs=3", "trainer.deterministic=true", "data.augment.crop_padding=2", "data.augment.cutout=6",
             "model.fc_dropout=0.5", "trainer.limit_train_batches=6"]


def histories(client: MlflowClient, run_id: str) -> dict[str, dict[int, float]]:
    """Per metric, step -> value. Resuming from a checkpoint written at the end of validation, Lightning may
    validate that epoch again: the same value at the same step, logged twice (a different value would fail)."""
    found = {}
    for name in ("train/loss", "val/loss", "val/acc", "test/loss", "test/acc"):
        points = client.get_metric_history(run_id, name)
        assert len({(m.step, m.value) for m in points}) == len({m.step for m in points}), f"{name} differs at a step"
        found[name] = {m.step: m.value for m in points}
    return found


def interrupt_at_epoch(epoch: int):
    def on_train_epoch_start(self):
        if self.current_epoch == epoch:
            raise KeyboardInterrupt

    return on_train_epoch_start


def test_a_resumed_run_ends_with_the_metrics_of_the_uninterrupted_run(make_cfg, mlflow_client, idx_root, monkeypatch):
    base = ["data=mnist", f"data.root={idx_root}", *AUGMENTED]
    train(make_cfg(*base, "logger.experiment_name=whole"))
    (whole,) = runs(mlflow_client, "whole")

    with monkeypatch.context() as patch:  # Ctrl-C at the start of epoch 2, after epoch 1's checkpoint
        patch.setattr(ClassificationTask, "on_train_epoch_start", interrupt_at_epoch(2))
        with pytest.raises(SystemExit):
            train(make_cfg(*base, "logger.experiment_name=split"))
    train(make_cfg(*base, "logger.experiment_name=split", "ckpt_path=last"))
    (split,) = runs(mlflow_client, "split")
    assert split.info.status == "FINISHED"
    assert histories(mlflow_client, split.info.run_id) == histories(mlflow_client, whole.info.run_id)


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(make_cfg, mlflow_client, idx_root, monkeypatch, caplog):
    base = ["data=mnist", f"data.root={idx_root}", "trainer.max_epochs=3"]
    with monkeypatch.context() as patch:
        patch.setattr(ClassificationTask, "on_train_epoch_start", interrupt_at_epoch(2))
        with pytest.raises(SystemExit):
            train(make_cfg(*base))
    (killed,) = runs(mlflow_client)
    last = Path(killed.data.tags["imgrec.checkpoint_dir"]) / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # the process died while writing it
    with caplog.at_level("WARNING"):
        train(make_cfg(*base, "ckpt_path=last"))
    assert "last.ckpt is damaged" in caplog.text
    (resumed,) = runs(mlflow_client)
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_a_checkpoint_that_cannot_be_written_fails_the_run_in_one_line_and_keeps_the_previous(
        error, make_cfg, mlflow_client, idx_root, monkeypatch):
    base = ["data=mnist", f"data.root={idx_root}", "trainer.max_epochs=3"]
    real_save, saves = torch.save, []

    def disk_full_from_epoch_2(obj, file, *args, **kwargs):  # epoch 1 writes epoch_000.ckpt and last.ckpt
        saves.append(getattr(file, "name", file))
        if len(saves) > 2:
            file.write(b"half a checkpoint")
            raise OSError(error, os.strerror(error))
        return real_save(obj, file, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", disk_full_from_epoch_2)
        with pytest.raises(CheckpointWriteError) as failure:
            train(make_cfg(*base))
    (failed,) = runs(mlflow_client)
    folder = Path(failed.data.tags["imgrec.checkpoint_dir"])
    message = one_line(failure.value)
    assert failed.info.status == "FAILED" and message == str(failure.value) and os.strerror(error) in message
    assert message.startswith(str(folder))  # names the file it could not write
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]  # no partial file left
    assert torch.load(folder / "last.ckpt", weights_only=False)["epoch"] == 0  # the previous one, whole
    train(make_cfg(*base, "ckpt_path=last"))
    (resumed,) = runs(mlflow_client)
    assert resumed.info.run_id == failed.info.run_id and resumed.info.status == "FINISHED"
    assert mlflow_client.get_metric_history(resumed.info.run_id, "fit/epochs")[-1].value == 3


def test_checkpoints_carry_the_random_generators(make_cfg, mlflow_client, idx_root):
    train(make_cfg("data=mnist", f"data.root={idx_root}"))
    (run,) = runs(mlflow_client)
    checkpoint = torch.load(Path(run.data.tags["imgrec.checkpoint_dir"]) / "last.ckpt", weights_only=True)
    assert set(checkpoint["imgrec_rng"]) == {"torch", "cuda", "numpy", "python"}


# -- beyond one machine --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` on loopback, backed by PostgreSQL, serving artifacts itself (as a team would run it); it can
    be stopped and started again on the same port and database, as a restarted server is."""

    def __init__(self, postgres_url: str, folder: Path):
        self.postgres_url, self.folder, self.port = postgres_url, folder, free_port()
        self.url, self.process = f"http://127.0.0.1:{self.port}", None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [Path(sys.executable).parent / "mlflow", "server", "--backend-store-uri", self.postgres_url,
             "--artifacts-destination", str(self.folder / "server-artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "2"],
            cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    pytest.skip(f"mlflow server did not start: {self.process.stderr.read()[-500:]}")
                time.sleep(1)
        self.stop()
        pytest.skip("mlflow server did not answer within 120 s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None


@pytest.fixture
def tracking_server(postgres_url, tmp_path):
    server = MlflowServer(postgres_url, tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mlflow_server(tracking_server):
    return tracking_server.url


@pytest.mark.slow
def test_eight_parallel_writers_to_a_tracking_server_on_postgresql(mlflow_server, tmp_path, idx_root):
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    processes = [launch([f"data.root={idx_root}", "model=mlp", f"seed={seed}", "logger.artifact_location=null", *FAST],
                        tmp_path, env) for seed in range(8)]
    for code, err in finish_all(processes):
        assert code == 0, err[-2000:]
    remote = MlflowClient(mlflow_server)
    finished = runs(remote)
    assert len(finished) == 8 and {r.info.status for r in finished} == {"FINISHED"}
    for run in finished:
        assert {"train/loss", "val/acc", "val/acc_best", "test/acc", "fit/epochs"} <= set(run.data.metrics)
        assert "per_class_metrics.csv" in {a.path for a in remote.list_artifacts(run.info.run_id)}  # via the server


@pytest.mark.slow
def test_torchrun_launches_two_ranks_that_track_one_run(tmp_path, idx_root):
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | ONE_THREAD
    done = subprocess.run(
        [torchrun, "--nnodes=1", "--nproc_per_node=2", str(REPO / "train.py"), f"data.root={idx_root}",
         "trainer.strategy=ddp", "trainer.devices=2", *FAST, "hydra.run.dir=outputs/runs/torchrun_job"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs(client(tmp_path))  # one run for the world, not one per rank
    assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics
    per_class = Path(client(tmp_path).download_artifacts(run.info.run_id, "per_class_metrics.csv")).read_text()
    support = sum(int(line.rsplit(",", 1)[1]) for line in per_class.splitlines()[1:])
    assert support == 64  # every test image of both ranks' shards: the metrics are the whole world's


class ServerOutage(L.Callback):
    """Stops the tracking server when epoch `at` begins; starts it again when training ends (if `back`), before the
    test; records each epoch's wall time."""

    def __init__(self, server: MlflowServer, at: int, back: bool):
        self.server, self.at, self.back, self.epoch_seconds = server, at, back, []

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.at:
            self.server.stop()
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_seconds.append(time.perf_counter() - self.started)

    def on_train_end(self, trainer, pl_module):
        if self.back:
            self.server.start()


def outage_run(tracking_server, make_cfg, idx_root, back: bool, *more: str) -> tuple[DictConfig, ServerOutage]:
    outage = ServerOutage(tracking_server, at=1, back=back)
    cfg = make_cfg("data=mnist", f"data.root={idx_root}", "trainer.max_epochs=4", "logger.artifact_location=null",
                   f"logger.tracking_uri={tracking_server.url}", *more)
    train(cfg, callbacks=[outage])
    print("epoch seconds:", [round(s, 2) for s in outage.epoch_seconds])  # for the record; not asserted
    return cfg, outage


def assert_whole(client: MlflowClient, run) -> None:
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == sorted(
        m.step for m in client.get_metric_history(run_id, "val/acc")) and len(
        client.get_metric_history(run_id, "val/acc")) == 4  # every epoch's
    assert {"test/acc", "fit/epochs", "perf/train_img_per_s"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"per_class_metrics.csv", "last"} <= artifacts  # reports and checkpoints: on the server
    assert run.outputs.model_outputs  # the run's MLflow model


@pytest.mark.slow
def test_a_run_trains_through_a_tracking_server_outage_and_sends_everything_when_it_is_back(
        tracking_server, make_cfg, idx_root, caplog):
    with caplog.at_level("WARNING"):
        cfg, outage = outage_run(tracking_server, make_cfg, idx_root, back=True)
    assert len(outage.epoch_seconds) == 4  # epochs 2-4 trained while the server was down
    assert "is unreachable" in caplog.text and "is back" in caplog.text
    remote = MlflowClient(tracking_server.url)
    (run,) = runs(remote)
    assert_whole(remote, run)
    assert not (Path(cfg.paths.output_dir) / "mlflow_spool").exists()  # nothing left behind


@pytest.mark.slow
def test_a_run_whose_server_stays_away_keeps_its_logs_and_sync_sends_them_into_the_same_run(
        tracking_server, make_cfg, idx_root, caplog, capsys):
    from tests.conftest import cli

    with caplog.at_level("WARNING"):
        cfg, _ = outage_run(tracking_server, make_cfg, idx_root, False, "logger.offline_wait_s=1")
    spool = Path(cfg.paths.output_dir) / "mlflow_spool"
    said = [r.getMessage() for r in caplog.records if "imgrec sync" in r.getMessage()]
    assert len(said) == 1 and str(spool) in said[0] and "\n" not in said[0]  # one line, naming the spool
    assert (spool / "writes.jsonl").is_file()
    tracking_server.start()
    remote = MlflowClient(tracking_server.url)
    (run,) = runs(remote)
    assert run.info.status == "RUNNING"  # what it logged before the outage, and no more
    cli("sync", f"paths.root={cfg.paths.root}")
    (run,) = runs(remote)
    assert_whole(remote, run)
    assert not spool.exists()


def test_a_spooled_write_keeps_its_mlflow_entities_and_refuses_anything_else():
    from mlflow.entities import Metric, Param, RunTag

    from imgrec.tracking.spool import Write

    write = Write("log_batch", ["run"], {"metrics": [Metric("val/acc", 0.5, 7, 3)], "params": [Param("lr", "0.1")],
                                         "tags": [RunTag("t", "x")]})
    back = Write.from_json(write.to_json())
    assert back.method == "log_batch" and back.args == ["run"]
    assert [(m.key, m.value, m.timestamp, m.step) for m in back.kwargs["metrics"]] == [("val/acc", 0.5, 7, 3)]
    assert (back.kwargs["params"][0].value, back.kwargs["tags"][0].key) == ("0.1", "t")
    with pytest.raises(ValueError, match="not a write"):
        Write.from_json('{"method": "delete_run", "args": ["run"], "kwargs": {}}')
    hostile = write.to_json().replace('"service_pb2:Metric"', '"os.path:Metric"')
    with pytest.raises(ValueError, match="not an MLflow message"):
        Write.from_json(hostile)
