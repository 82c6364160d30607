"""Shards (`imgrec shard`, data=stream): written from any source, read back as the source's splits, streamed in an
order drawn from (seed, epoch) with disjoint shares per rank, resumed, on a folder and on a real S3 protocol (moto's
server on loopback); bad input in one line; no secret in what MLflow keeps."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from imgrec.data import remote, shards
from imgrec.data.builtin import BuiltinImages
from imgrec.data.stream import ShardStream
from imgrec.errors import DataFileError, DataNotFoundError
from imgrec.train import train
from tests.conftest import FAST, cli, runs, train_py
from tests.dataset_files import write_idx_dataset, write_image_folder

SMALL = ["model.channels=[8,16]", "model.fc=[32]", "logger.log_model=false"]
QUICK = [o for o in FAST if not o.startswith("data.val_size")]  # the shards hold their splits: no val_size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    """An S3-compatible server on loopback (moto's), its endpoint and credentials in the environment, one bucket."""
    moto_server = pytest.importorskip("moto.server")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}.items():
        monkeypatch.setenv(key, value)
    import boto3
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # fsspec keeps one per set of arguments: not per endpoint in the env
    boto3.client("s3").create_bucket(Bucket="data")
    yield {"server": server, "port": port, "endpoint": endpoint}
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def mnist(tmp_path):
    root = tmp_path / "idx"
    write_idx_dataset(root, n_train=256, n_test=64, gz=True)
    return root


def shard(home: Path, out: str, *source: str):
    return cli("shard", f"paths.root={home}", f"out={out}", "min_shards=4", "workers=2", *source)


def test_shards_hold_the_splits_training_draws_and_writing_again_rewrites_nothing(tmp_path, mnist):
    out = tmp_path / "shards"
    report = shard(tmp_path, str(out), "data=mnist", f"data.root={mnist}", "data.val_size=32")
    manifest = json.loads((out / "manifest.json").read_text())
    source = BuiltinImages("mnist", str(mnist), download=False, val_size=32)
    source.load()
    assert [manifest["splits"][s]["count"] for s in shards.SPLITS] == [224, 32, 64]
    assert len(manifest["splits"]["train"]["shards"]) == 4 and manifest["class_names"] == list(source.class_names)
    assert manifest["normalization"]["mean"] == pytest.approx(source.normalization.stats()[0])
    copies = remote.LocalCopies(tmp_path / "cache", 10**9)
    test = [s for uri, _ in shards.Manifest(str(out), manifest).shards("test") for s in shards.samples(uri, copies)]
    assert np.array_equal(np.stack([image for image, _ in test]), source.splits.test.gather().numpy())  # in order
    assert [label for _, label in test] == source.splits.test.labels.tolist()
    train_images = {bytes(image) for uri, _ in shards.Manifest(str(out), manifest).shards("train")
                    for image, _ in shards.samples(uri, copies)}
    assert train_images == {bytes(image.numpy()) for image in source.splits.train.gather()}  # the same images
    assert "written in" in report.markdown()
    times = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = shard(tmp_path, str(out), "data=mnist", f"data.root={mnist}", "data.val_size=32")
    assert "nothing rewritten" in again.markdown() and times == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_a_folder_is_sharded_at_its_decoded_size(tmp_path):
    write_image_folder(tmp_path / "photos", per_class=10, shape=(3, 20, 30), split_folders=("train", "test"))
    shard(tmp_path, str(tmp_path / "shards"), "data=folder", f"data.root={tmp_path / 'photos'}", "data.image_size=16",
          "data.val_size=6")
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["image_shape"] == [3, 18, 18] and manifest["preprocess"]["image_size"] == [16, 16]  # 16 / 0.875
    assert manifest["splits"]["test"]["count"] == 30 and manifest["source"]["name"] == "folder"


def collect(stream: ShardStream) -> list[tuple[bytes, int]]:
    return [(bytes(image.numpy()), int(label)) for images, labels in stream for image, label in zip(images, labels)]


def test_each_epoch_has_its_own_order_and_each_rank_its_own_share(tmp_path, mnist, monkeypatch):
    out = tmp_path / "shards"
    shard(tmp_path, str(out), "data=mnist", f"data.root={mnist}", "data.val_size=32")
    manifest, copies = shards.read_manifest(str(out)), remote.LocalCopies(tmp_path / "cache", 10**9)
    one = ShardStream(manifest.shards("train"), 16, copies, seed=3, train=True, shuffle_buffer=50)
    first, again = collect(one), collect(one)
    assert len(first) == 224 and first == again  # the order is the seed's and the epoch's
    one.set_epoch(1)
    assert collect(one) != first and sorted(collect(one)) == sorted(first)  # another order, the same images
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr("imgrec.data.stream.rank_and_world", lambda rank=rank: (rank, 2))
        stream = ShardStream(manifest.shards("train"), 16, copies, seed=3, train=True, shuffle_buffer=50, world=2)
        shares.append(collect(stream))
        assert len(stream) == 224 // 32 and len(shares[-1]) == len(stream) * 16  # equal steps on every rank
    assert not set(shares[0]) & set(shares[1])  # disjoint
    monkeypatch.setattr("imgrec.data.stream.rank_and_world", lambda: (0, 1))
    everything = collect(ShardStream(manifest.shards("test"), 10, copies, 0, train=False))
    for rank in (0, 1):  # evaluation: every other image, in order, as DistributedSampler deals them
        monkeypatch.setattr("imgrec.data.stream.rank_and_world", lambda rank=rank: (rank, 2))
        assert collect(ShardStream(manifest.shards("test"), 10, copies, 0, train=False, world=2)) == everything[rank::2]


def test_training_from_local_shards_tracks_the_uri_and_every_verb_finds_the_data_through_the_run(make_cfg, mnist,
                                                                                                 tmp_path):
    out = tmp_path / "shards"
    shard(tmp_path, str(out), "data=mnist", f"data.root={mnist}")
    cfg = make_cfg("data=stream", f"data.uri={out}", *SMALL, *QUICK, fast=False)
    train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = runs(client)
    assert run.info.status == "FINISHED" and "perf/train_img_per_s" in run.data.metrics
    (entry,) = run.inputs.dataset_inputs
    assert entry.dataset.name == "stream" and str(out) in entry.dataset.source
    report = cli("evaluate", f"model=runs:/{run.info.run_id}", f"paths.root={tmp_path}",
                 f"logger.tracking_uri={cfg.logger.tracking_uri}")
    # the same 64 test images (the run tested in bf16, the verb in fp32: a near tie may go the other way)
    assert "64 test images of stream" in report.markdown()
    assert report.metrics["test/acc"] == pytest.approx(run.data.metrics["test/acc"], abs=2 / 64)


@pytest.mark.parametrize("setup, message", [
    (lambda out: out.mkdir(), "holds no manifest.json: not shards imgrec wrote"),
    (lambda out: out.mkdir() or (out / "manifest.json").write_text('{"format": "imgrec-shards/0"}'),
     "written by another version of imgrec shard"),
])
def test_a_folder_that_is_not_shards_is_one_line(make_cfg, tmp_path, setup, message):
    setup(tmp_path / "shards")
    with pytest.raises(SystemExit, match=f"^error: .*{message}"):
        cli("train", f"paths.root={tmp_path}", *QUICK, "data=stream", f"data.uri={tmp_path / 'shards'}")


def test_a_truncated_shard_fails_the_run_in_one_line(make_cfg, mnist, tmp_path):
    out = tmp_path / "shards"
    shard(tmp_path, str(out), "data=mnist", f"data.root={mnist}")
    victim = out / "train-000002.tar"
    victim.write_bytes(victim.read_bytes()[:3000])
    cfg = make_cfg("data=stream", f"data.uri={out}", *SMALL, *QUICK, fast=False)
    with pytest.raises(DataFileError, match="the shard .*train-000002.tar is truncated or damaged") as error:
        train(cfg)
    assert "\n" not in str(error.value)
    (run,) = runs(MlflowClient(cfg.logger.tracking_uri))
    assert run.info.status == "FAILED"


# -- on a real S3 protocol -------------------------------------------------------------------------------------

def every_text_mlflow_keeps(client: MlflowClient, run, tmp_path: Path) -> str:
    texts = [json.dumps(run.data.params), json.dumps(run.data.tags)]
    folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    texts += [path.read_bytes().decode("latin1") for path in folder.rglob("*") if path.is_file()]
    return "\n".join(texts)


def test_shards_on_s3_are_written_trained_from_and_keep_their_secrets(make_cfg, mnist, tmp_path, s3):
    out = "s3://data/mnist"
    shard(tmp_path, out, "data=mnist", f"data.root={mnist}")
    import fsspec

    listed = fsspec.filesystem("s3", skip_instance_cache=True).ls("data/mnist")
    assert "data/mnist/manifest.json" in listed and sum(name.endswith(".tar") for name in listed) == 6
    secret = {"key": "AKIAIMGRECTESTKEY01", "secret": "S3cr3t-never-tracked-42"}
    options = f"data.storage_options={{key:{secret['key']},secret:{secret['secret']}}}"
    cfg = make_cfg(*QUICK, "data=stream", f"data.uri={out}", options, f"data.cache_dir={tmp_path / 'cache'}", *SMALL,
                   "logger.log_model=true", fast=False)
    train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    (run,) = runs(client)
    assert run.info.status == "FINISHED" and run.data.params["data.storage_options.secret"] == "<redacted>"
    assert any((tmp_path / "cache").iterdir())  # the shards came through the local cache
    kept = every_text_mlflow_keeps(client, run, tmp_path)
    assert secret["key"] not in kept and secret["secret"] not in kept
    checkpoint = torch.load(run.data.tags["imgrec.best_checkpoint"], weights_only=True)
    assert secret["secret"] not in json.dumps(checkpoint["imgrec_net"])


def test_an_outage_mid_epoch_is_retried_then_fails_in_one_line_and_the_run_resumes_in_order(make_cfg, mnist,
                                                                                             tmp_path, s3, monkeypatch):
    out = "s3://data/outage"
    shard(tmp_path, out, "data=mnist", f"data.root={mnist}")
    common = [*QUICK, "data=stream", f"data.uri={out}", f"data.cache_dir={tmp_path / 'cache'}", "data.cache_limit=1",
              "data.retries=2", *SMALL, "trainer.max_epochs=2", "trainer.limit_train_batches=null"]
    monkeypatch.setattr(remote, "BACKOFF_S", 0.05)
    downloads, fetch = [], remote.LocalCopies.path

    def counting(self, uri):  # the server goes away during epoch 2 (a cache of 1 byte downloads every shard again)
        downloads.append(uri)
        if len(downloads) == 8:
            s3["server"].stop()
        return fetch(self, uri)

    monkeypatch.setattr(remote.LocalCopies, "path", counting)
    with pytest.raises(DataNotFoundError, match=r"^data.uri: s3://data/outage/train-.*unreachable after 3 tries .*"
                                                r"resume with ckpt_path=last$"):
        train(make_cfg(*common, fast=False))
    client = MlflowClient(make_cfg(*common, fast=False).logger.tracking_uri)
    (failed,) = runs(client)
    assert failed.info.status == "FAILED"
    s3["server"] = type(s3["server"])(ip_address="127.0.0.1", port=s3["port"], verbose=False)
    s3["server"].start()  # moto's buckets live in this process: back as they were
    monkeypatch.setattr(remote.LocalCopies, "path", fetch)
    train(make_cfg(*common, "ckpt_path=last", fast=False))
    resumed = client.get_run(failed.info.run_id)
    assert resumed.info.status == "FINISHED"
    train(make_cfg(*common, "logger.experiment_name=straight", fast=False))  # the same config, never interrupted
    (straight,) = runs(client, "straight")
    assert resumed.data.metrics["test/acc"] == pytest.approx(straight.data.metrics["test/acc"], abs=1e-6)


def test_a_missing_bucket_or_prefix_and_an_unreachable_endpoint_are_one_line(tmp_path, s3, monkeypatch):
    for uri, message in (("s3://nobucket/x", "no such bucket"), ("s3://data/nothing", "holds no manifest.json")):
        with pytest.raises((DataNotFoundError, DataFileError), match=message) as error:
            shards.read_manifest(uri, retries=0)
        assert "\n" not in str(error.value)
    monkeypatch.setattr(remote, "BACKOFF_S", 0.01)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(DataNotFoundError, match=r"unreachable after 2 tries"):
        shards.read_manifest("s3://data/mnist", retries=1)


@pytest.mark.slow
def test_refused_credentials_are_one_line(tmp_path, monkeypatch):
    """A server that checks credentials (moto's, with authentication on from the first request)."""
    pytest.importorskip("moto.server")
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "AKIANOSUCHUSER00",
                           "AWS_SECRET_ACCESS_KEY": "wrong", "AWS_DEFAULT_REGION": "us-east-1",
                           "AWS_MAX_ATTEMPTS": "1"}.items():
            monkeypatch.setenv(key, value)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        with pytest.raises(DataNotFoundError, match="the store refused the credentials for s3://data/x") as error:
            shards.read_manifest("s3://data/x", retries=0)
        assert "\n" not in str(error.value)
    finally:
        server.terminate()
        server.wait(10)
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.mark.slow
def test_two_ddp_ranks_read_disjoint_shares_of_local_shards(tmp_path, mnist):
    out = tmp_path / "shards"
    shard(tmp_path, str(out), "data=mnist", f"data.root={mnist}")
    done = train_py("trainer=ddp_cpu", "data=stream", f"data.uri={out}", *QUICK, *SMALL, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    said = [line.split(" reads ")[1].split(", ") for line in (done.stdout + done.stderr).splitlines()
            if "stream 0 of 2 reads" in line or "stream 1 of 2 reads" in line]
    assert len(said) == 2 and not set(said[0]) & set(said[1]) and len(said[0] + said[1]) == 4
    (run,) = runs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db"))
    assert run.info.status == "FINISHED"
