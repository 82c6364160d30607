"""The speed work: precision and memory format chosen for the hardware, test-time flips, the fast recipe,
and the benchmark's plain loop (its figures live in the README, not here)."""

import json
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from imgrec import hardware
from imgrec.models.cnn import ConvNet
from imgrec.models.mlp import MLP
from imgrec.models.rnn import RowRNN
from imgrec.progress import TimeToAccuracy
from imgrec.tasks.classification import ClassificationTask
from imgrec.train import build_task, train
from imgrec.validation import validate
from imgrec.verbs import bench
from tests.conftest import REPO, runs


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, "bf16-mixed"), (False, True, "bf16-mixed"),
                                                        (False, False, "32-true")])
def test_auto_precision_uses_bf16_only_where_the_cpu_computes_it(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.auto_precision("cpu") == expected and hardware.auto_precision("auto") == expected


def test_auto_precision_on_gpus_follows_their_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for bf16, expected in ((True, "bf16-mixed"), (False, "16-mixed")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert hardware.auto_precision("gpu") == expected


def test_channels_last_only_for_networks_with_convolutions():
    assert hardware.auto_memory_format(ConvNet((1, 28, 28), 10)) == "channels_last"
    assert hardware.auto_memory_format(MLP((1, 28, 28), 10)) == "contiguous_format"
    assert hardware.auto_memory_format(RowRNN((1, 28, 28), 10)) == "contiguous_format"


def test_a_run_without_bf16_trains_in_fp32_and_logs_what_it_chose(make_cfg, mlflow_client, idx_root, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    train(make_cfg("data=mnist", f"data.root={idx_root}"))
    (run,) = runs(mlflow_client)
    assert run.data.params["trainer.precision"] == "32-true" and run.data.params["memory_format"] == "channels_last"
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    train(make_cfg("data=mnist", f"data.root={idx_root}"))
    bf16 = runs(mlflow_client)[-1]
    assert bf16.data.params["trainer.precision"] == "bf16-mixed"
    # the same recipe on other hardware: the same config hash (a table row is not trained again for it)
    assert bf16.data.tags["imgrec.config_hash"] == run.data.tags["imgrec.config_hash"]


def test_test_time_flip_averages_each_image_with_its_mirror():
    torch.manual_seed(0)
    net = ConvNet((1, 8, 8), 3, channels=[4], fc=[])
    task = ClassificationTask(net, optimizer=torch.optim.SGD, scheduler=None, num_classes=3, tta_flip=True).eval()
    images, labels = torch.randn(5, 1, 8, 8), torch.randint(0, 3, (5,))
    _, logits, _ = task.model_step((images, labels), "val")
    expected = (net(images) + net(images.flip(3))) / 2
    assert torch.allclose(logits, expected) and torch.equal(logits.argmax(1), expected.argmax(1))
    assert not torch.equal(net(images).argmax(1), net(images.flip(3)).argmax(1))  # the mirror image does count here


def test_the_fast_recipe_composes_validates_and_builds(make_cfg):
    cfg = make_cfg("experiment=fmnist_fast", fast=False)
    validate(cfg)
    assert cfg.task.tta_flip and cfg.data.augment.hflip and cfg.scheduler.schedule._target_.endswith("OneCycleLR")
    assert cfg.trainer.check_val_every_n_epoch == cfg.trainer.max_epochs  # validated once, at the end
    task = build_task(cfg, instantiate(cfg.data))
    assert task(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow
def test_the_plain_loop_does_the_pipelines_work_without_the_framework(tmp_path, idx_root):
    done = subprocess.run([sys.executable, str(REPO / "scripts/plain_loop.py"), "data=mnist", f"data.root={idx_root}",
                           "data.batch_size=16", "data.val_size=32", "trainer.max_epochs=2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["epochs"] == 2 and result["images_trained"] == 2 * (256 - 32)
    assert 0 <= result["test_acc"] <= 1 and result["memory_format"] == "channels_last"
    probe = "import sys; exec(open(sys.argv[1]).read().split('def main')[0]); print('lightning' in sys.modules, 'mlflow' in sys.modules)"
    imports = subprocess.run([sys.executable, "-c", probe, str(REPO / "scripts/plain_loop.py")], capture_output=True,
                             text=True, timeout=120, check=True)
    assert imports.stdout.split() == ["False", "False"]


def test_compile_is_a_validated_switch(make_cfg):
    from imgrec.errors import ConfigError

    with pytest.raises(ConfigError, match="compile must be true or false"):
        validate(make_cfg("compile=maybe"))
    assert make_cfg().compile is False


def test_a_run_logs_when_its_validation_accuracy_first_reached_each_threshold(make_cfg, mlflow_client, idx_root):
    train(make_cfg("data=mnist", f"data.root={idx_root}", "trainer.max_epochs=2",
                   "callbacks.time_to_accuracy.thresholds=[0.0,1.01]"))
    (run,) = runs(mlflow_client)
    reached = mlflow_client.get_metric_history(run.info.run_id, "perf/seconds_to_val_acc_0.00")
    first_validation = mlflow_client.get_metric_history(run.info.run_id, "val/acc")[0]
    assert len(reached) == 1 and reached[0].step == first_validation.step and reached[0].value > 0  # epoch 1, once
    assert "perf/seconds_to_val_acc_1.01" not in run.data.metrics  # never reached


def test_time_to_accuracy_counts_on_from_a_resumed_runs_clock():
    before = TimeToAccuracy([0.5])
    before.load_state_dict({"seconds": 100.0, "reached": {"0.5": 42.0}})
    before.on_fit_start(None, None)
    state = before.state_dict()
    assert state["reached"] == {"0.5": 42.0} and 100.0 <= state["seconds"] < 110.0


@pytest.mark.slow
def test_the_time_to_accuracy_ladder_times_each_recipe_and_plots_them(tmp_path, idx_root, monkeypatch):
    from tests.conftest import cli

    monkeypatch.chdir(tmp_path)
    report = cli("bench", "mode=time_to_accuracy", f"paths.root={tmp_path}", "data=mnist", f"data.root={idx_root}",
                 "data.batch_size=16", "data.val_size=32", "trainer.max_epochs=1")
    (table,) = report.tables
    assert [row["recipe"] for row in table.rows] == list(bench.LADDER)
    assert all(row["wall_s"] > 0 and 0 <= row["test_acc"] <= 1 for row in table.rows)
    assert (tmp_path / "outputs" / "bench" / "time_to_accuracy" / "time_to_accuracy.png").stat().st_size > 0
