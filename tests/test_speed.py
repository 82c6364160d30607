"""The speed work: precision and memory format chosen for the hardware, test-time flips, the fast recipe,
and the benchmark's plain loop (its figures live in the README, not here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

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


def test_test_time_translations_average_two_diagonal_shifts_with_half_the_weight():
    torch.manual_seed(0)
    net = ConvNet((1, 8, 8), 3, channels=[4], fc=[])
    task = ClassificationTask(net, optimizer=torch.optim.SGD, scheduler=None, num_classes=3, tta_flip=True,
                              tta_translate=1).eval()
    images, labels = torch.randn(5, 1, 8, 8), torch.randint(0, 3, (5,))
    _, logits, _ = task.model_step((images, labels), "test")

    def flipped(x):
        return (net(x) + net(x.flip(3))) / 2

    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
    expected = flipped(images) / 2 + (flipped(padded[..., :8, :8]) + flipped(padded[..., 2:, 2:])) / 4
    assert torch.allclose(logits, expected, atol=1e-6)
    assert not torch.allclose(logits, flipped(images), atol=1e-3)  # the shifted views do count
    with pytest.raises(ValueError, match="task.tta_translate"):
        ClassificationTask(net, optimizer=torch.optim.SGD, scheduler=None, num_classes=3, tta_translate=-1)


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
def test_airbench_whitens_the_patches_of_the_images_it_is_fitted_to(in_shape):
    from imgrec.models.airbench import AirbenchNet

    torch.manual_seed(0)
    net = AirbenchNet(in_shape, 10, widths=[8, 16, 16])
    mixing = torch.randn(in_shape[0], in_shape[0]) + 2 * torch.eye(in_shape[0])  # correlated channels
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(64, *in_shape)).cumsum(dim=3)  # and neighbours
    net.fit_to_data(images)
    half = net.whiten.weight.shape[0] // 2
    responses = torch.nn.functional.conv2d(images, net.whiten.weight[:half])
    covariance = torch.cov(responses.transpose(0, 1).reshape(half, -1))
    assert torch.allclose(covariance, torch.eye(half), atol=0.02)  # whitened: unit variance, uncorrelated
    assert torch.equal(net.whiten.weight[half:], -net.whiten.weight[:half])
    assert not net.whiten.weight.requires_grad and net(images[:2]).shape == (2, 10)
    with pytest.raises(ValueError, match="model.widths"):
        AirbenchNet((1, 8, 8), 10, widths=[8, 8, 8])


@pytest.mark.slow
def test_cifar10_94_trains_through_the_pipeline_on_cifar_format_files(make_cfg, mlflow_client, cifar10_root):
    cfg = make_cfg("experiment=cifar10_94", f"data.root={cifar10_root}", "data.batch_size=32", "data.val_size=40",
                   "model.widths=[8,16,16]", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=2",
                   "trainer.limit_train_batches=2")
    validate(cfg)
    task = build_task(cfg, instantiate(cfg.data))
    assert type(task.net).__name__ == "AirbenchNet" and task.tta_translate == 1 and task.label_smoothing == 0.2
    untrained = task.net.whiten.weight.clone()
    train(cfg)
    (run,) = runs(mlflow_client)
    assert run.info.status == "FINISHED" and 0 <= run.data.metrics["test/acc"] <= 1
    assert run.data.params["model._target_"] == "imgrec.models.airbench.AirbenchNet"
    checkpoint = next((Path(cfg.paths.output_dir) / "checkpoints").glob("epoch_*.ckpt"))
    whiten = torch.load(checkpoint, weights_only=True)["state_dict"]["net.whiten.weight"]
    assert whiten.shape == (24, 3, 2, 2) and not torch.equal(whiten, untrained)  # fitted to the training images


PROFILE = [  # a py-spy raw profile: stacks (outermost frame first) and their sample counts
    "<module> (train.py:10);main (imgrec/verbs/train.py:83);_find_and_load (<frozen importlib._bootstrap>:1176);"
    "<module> (lightning/__init__.py:1);_find_and_load (<frozen>:1);<module> (torch/__init__.py:1) 30",
    "<module> (train.py:10);_find_and_load (<frozen>:1);<module> (mlflow/__init__.py:1) 10",
    "<module> (train.py:10);fit (lightning/pytorch/trainer/trainer.py:584);_TrainingEpochLoop.run (x.py:153);"
    "backward (y.py:1) 150",
    "<module> (train.py:10);Trainer._test_impl (lightning/trainer.py:864);_find_and_load (<frozen>:1);"
    "<module> (matplotlib/__init__.py:1) 5",  # an import during the test counts as an import
    "<module> (train.py:10);Trainer._test_impl (lightning/trainer.py:864);_EvaluationLoop.run (z.py:1) 20",
    "<module> (train.py:10);something_else (w.py:1) 5",
    "Thread._bootstrap (threading.py:1002);loop (imgrec/repeating.py:17) 99",
]


def test_a_profile_is_sorted_into_phases_and_its_imports_by_package(tmp_path):
    from imgrec import profiling

    raw = tmp_path / "profile.txt"
    raw.write_text("\n".join(PROFILE) + "\n")
    seconds, imports, background = profiling.summarise(raw, rate=10)
    assert seconds == {"training batches": 15.0, "imports": 4.5, "test (trainer.test)": 2.0, "other": 0.5}
    assert imports == {"lightning": 3.0, "mlflow": 1.0, "matplotlib": 0.5} and background == 9.9


def test_bench_profile_puts_both_processes_phases_side_by_side(tmp_path, monkeypatch):
    from imgrec import profiling
    from tests.conftest import cli

    monkeypatch.chdir(tmp_path)
    profiled = []

    def record(command, raw, env, cwd, rate=profiling.RATE):
        profiled.append(command[1:])
        raw.write_text("\n".join(PROFILE[: 3 if "plain_loop" in command[1] else None]) + "\n")
        return raw

    monkeypatch.setattr(profiling, "record", record)
    report = cli("bench", "mode=profile")
    assert [Path(c[0]).name for c in profiled] == ["train.py", "plain_loop.py"]
    assert all(c[1:] == bench.VS_PLAIN for c in profiled)
    phases, imports = (section.table for section in report.sections)
    by_phase = {row["what"]: row for row in phases.rows}
    assert by_phase["training batches"]["pipeline"] == by_phase["training batches"]["plain loop"] == 3.0
    assert by_phase["test (trainer.test)"]["plain loop"] == 0.0 and by_phase["total"]["pipeline"] == pytest.approx(4.4)
    assert {row["what"] for row in imports.rows} == {"lightning", "mlflow", "matplotlib", "total"}
    assert (tmp_path / "outputs" / "bench" / "profile" / "bench.md").exists()


@pytest.mark.parametrize("given, timed", [
    ([], bench.VS_PLAIN),
    (["paths.root={root}"], [*bench.VS_PLAIN, "paths.root={root}"]),  # where runs go is not what is timed
    (["model=cnn", "trainer.max_epochs=3"], ["model=cnn", "trainer.max_epochs=3"]),
])
def test_vs_plain_times_the_keras_convnet_unless_told_what_to_time(given, timed, tmp_path, monkeypatch):
    from imgrec.report import Section
    from tests.conftest import cli

    monkeypatch.chdir(tmp_path)
    asked = []
    monkeypatch.setattr(bench, "side_by_side", lambda pipeline, plain, pairs: asked.append((pipeline, plain)) or Section())
    cli("bench", "mode=vs_plain", "pairs=1", *(g.format(root=tmp_path) for g in given))
    expected = [t.format(root=tmp_path) for t in timed]
    assert asked == [(expected, expected)]


@pytest.mark.parametrize("recipe", list(bench.ABLATIONS))
def test_every_ablation_change_composes_and_validates_on_its_recipe(recipe, make_cfg):
    """What `imgrec bench mode=ablation recipe=R` runs: each change is a valid override of experiment=R."""
    for change, overrides in bench.ABLATIONS[recipe].items():
        cfg = make_cfg(f"experiment={recipe}", *overrides, fast=False)
        validate(cfg)
        for override in overrides:
            key, value = override.split("=", 1)
            if "." in key:  # a value, not a config group: it took
                assert same(OmegaConf.select(cfg, key), value), (change, key)


def same(configured, given: str) -> bool:
    """A config value against an override's text: numbers as numbers, the rest as written (lists without spaces)."""
    text = str(configured).replace(" ", "").lower()
    try:
        return float(text) == float(given)
    except ValueError:
        return text == given.lower()


def test_an_unknown_ablation_recipe_is_one_line(tmp_path, monkeypatch):
    from tests.conftest import cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        cli("bench", "mode=ablation", "recipe=nope")
    assert str(done.value.code).startswith("error: recipe") and "\n" not in str(done.value.code)
