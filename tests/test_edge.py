"""Models for the edge: distillation (task=distillation), structured pruning (imgrec.models.pruned, `imgrec compress`),
what a network costs (callbacks.cost), multi-objective sweeps (imgrec.sweep.pareto) and table=edge."""

import csv

import optuna
import pytest
import torch
from mlflow import MlflowClient

from imgrec import hub
from imgrec.errors import ConfigError
from imgrec.models import build
from imgrec.models.cnn import ConvNet
from imgrec.models.pruned import PrunedNet, prune, resize, shapes_of
from imgrec.tasks.distillation import DistillationTask
from imgrec.train import train
from tests.conftest import FAST, cli, model_job_args, runs

# -- distillation -------------------------------------------------------------------------------------------------


def test_the_distillation_loss_is_hintons():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    task = object.__new__(DistillationTask)
    task.temperature = 4.0
    p = (teacher / 4).softmax(1)
    expected = (p * (p.log() - (student / 4).log_softmax(1))).sum(1).mean() * 16
    assert float(task.distillation_loss(student, teacher)) == pytest.approx(float(expected), rel=1e-5)


def test_a_student_learns_from_its_teacher_on_gray_and_rgb(trained_classifier, tmp_path):
    c = trained_classifier
    data = [f"data={c['data']}", f"data.root={c['data_root']}"]
    overrides = [f"paths.root={c['home']}", *FAST, *data, "task=distillation", f"task.teacher={c['uri']}",
                 "model.channels=[4,8]", "model.fc=[16]", "trainer.precision=32"]
    from imgrec.config import compose

    train(compose(overrides, c["home"] / "outputs" / "student"))
    client = MlflowClient(c["tracking"])
    (student,) = [r for r in runs(client) if r.data.tags.get("imgrec.choice.task") == "distillation"]
    assert student.info.status == "FINISHED" and student.data.params["task.teacher"] == c["uri"]
    assert "train/loss_distill" in student.data.metrics
    teacher = hub.load_model(c["uri"], c["tracking"])
    from imgrec.data.trained import datamodule_of

    data = datamodule_of(teacher.spec, str(c["data_root"]))
    data.load()
    images, labels = data.test_pixels()
    with torch.no_grad():
        accuracy = float((teacher(images).argmax(1) == labels).float().mean())
    assert student.data.metrics["test/teacher_acc"] == pytest.approx(accuracy)
    net, spec = hub.load_net(f"runs:/{student.info.run_id}", c["tracking"])
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in teacher.net.parameters())


@pytest.mark.parametrize("overrides, message", [
    (["data=cifar10"], "task: task.teacher: it classifies 10 classes of mnist"),
    (["task.teacher=null"], "task: task.teacher: a trained classifier is required"),
    (["task.alpha=2"], "task: task: alpha in \\[0, 1\\] and temperature > 0 expected"),
])
def test_a_teacher_that_does_not_fit_is_one_line(gray_classifier, cifar10_root, overrides, message):
    from imgrec.config import compose

    c = gray_classifier
    base = [f"paths.root={c['home']}", *FAST, "data=mnist", f"data.root={c['data_root']}", "task=distillation",
            f"task.teacher={c['uri']}"]
    rgb = [f"data.root={cifar10_root}"] if "data=cifar10" in overrides else []  # another dataset, in its folder
    with pytest.raises(ConfigError, match=message) as err:
        train(compose([*base, *overrides, *rgb], c["home"] / "outputs" / "bad"))
    assert "\n" not in str(err.value)


# -- pruning ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, shape", [({"_target_": "imgrec.models.cnn.ConvNet", "_partial_": True}, (1, 28, 28)),
                                          ({"_target_": "imgrec.models.resnet.ResNet", "_partial_": True,
                                            "blocks": [3, 3, 3], "widths": [16, 32, 64], "shortcut": "projection"},
                                           (3, 32, 32))])
def test_pruning_removes_channels_and_the_record_rebuilds_the_net(model, shape):
    torch.manual_seed(0)
    net = build(model, shape, 10).eval()
    pruned = prune(net, shape, 0.5).eval()
    def count(n):
        return sum(p.numel() for p in n.parameters())

    assert count(pruned) < 0.45 * count(net)
    images = torch.rand(3, *shape)
    assert pruned(images).shape == (3, 10) and count(net) == count(build(model, shape, 10))  # the original kept
    rebuilt = resize(build(model, shape, 10), shapes_of(pruned)).eval()
    rebuilt.load_state_dict(pruned.state_dict())
    assert torch.allclose(rebuilt(images), pruned(images), atol=1e-5)


def test_a_net_without_convolutions_or_with_fixed_shortcuts_cannot_be_pruned():
    from imgrec.models.mlp import MLP

    with pytest.raises(ValueError, match="has no convolution to prune"):
        prune(MLP((1, 28, 28), 10), (1, 28, 28), 0.5)
    resnet20 = build({"_target_": "imgrec.models.resnet.CifarResNet", "_partial_": True, "depth": 20}, (3, 32, 32), 10)
    with pytest.raises(ValueError, match="zero-padding \\(option A\\) shortcuts.*needs projection shortcuts"):
        prune(resnet20, (3, 32, 32), 0.5)


def test_compress_prunes_fine_tunes_and_names_the_new_model_last(trained_classifier, capsys):
    c = trained_classifier
    finetune = "finetune=[" + ",".join(f"'{o}'" for o in FAST) + "]"
    report = cli("compress", *model_job_args(c), "prune=0.5", "finetune_epochs=1", "latency_calls=5", finetune)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("runs:/") and last == report.made
    pruned = hub.load_model(last, c["tracking"])  # rebuilt from its checkpoint's record alone
    original = hub.load_model(c["uri"], c["tracking"])
    assert pruned.spec.model["_target_"] == "imgrec.models.pruned.PrunedNet" and "shapes" in pruned.spec.model
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in original.parameters())
    assert pruned(torch.rand(2, *c["in_shape"])).shape == (2, 10)
    folder = c["home"] / "outputs" / "compress" / c["run"].info.run_id
    with (folder / "results.csv").open() as f:
        before, after = list(csv.DictReader(f))
    assert float(after["mflops"]) < float(before["mflops"]) and float(after["params"]) < float(before["params"])
    assert report.metrics["after/acc"] == pytest.approx(float(after["acc"]))
    # the same compression again: the fine-tuned run is reused
    again = cli("compress", *model_job_args(c), "prune=0.5", "finetune_epochs=1", "latency_calls=5", finetune)
    assert again.made == report.made


@pytest.mark.parametrize("args, message", [
    (["prune=1.5"], "prune: the share of channels to remove, between 0 and 1"),
    (["prune=0.5", "finetune_epochs=0"], "finetune_epochs: a positive integer"),
    (["data=cifar10"], "data: not a choice here; set its keys instead: data.root"),  # the model's own data
])
def test_bad_compression_is_one_line(gray_classifier, args, message):
    with pytest.raises(SystemExit) as err:
        cli("compress", *model_job_args(gray_classifier), *args)
    assert str(err.value.code).startswith(f"error: {message}") and "\n" not in str(err.value.code)


def test_compress_refuses_a_model_without_convolutions(make_cfg, mlflow_client, idx_root, tmp_path):
    train(make_cfg("data=mnist", f"data.root={idx_root}", "model=mlp"))
    (run,) = runs(mlflow_client)
    with pytest.raises(SystemExit) as err:
        cli("compress", f"model=runs:/{run.info.run_id}", f"paths.root={tmp_path}",
            f"logger.tracking_uri=sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert "has no convolution to prune" in str(err.value.code)


# -- what a network costs, and a sweep of two objectives --------------------------------------------------------------


def test_every_run_logs_its_cost_and_latency_when_asked(make_cfg, mlflow_client, idx_root):
    from imgrec import cost

    train(make_cfg("data=mnist", f"data.root={idx_root}", "callbacks.cost.latency=onnx", "model.channels=[4,8]",
                   "model.fc=[16]"))
    (run,) = runs(mlflow_client)
    metrics = run.data.metrics
    net, spec = hub.load_net(f"runs:/{run.info.run_id}", mlflow_client.tracking_uri)
    assert metrics["perf/params"] == sum(p.numel() for p in net.parameters())
    assert metrics["perf/mflops"] == pytest.approx(cost.mflops(net, spec.in_shape))
    assert 0 < metrics["perf/latency_ms"] < 1000


def test_a_two_objective_sweep_answers_with_its_pareto_front(project, idx_root):
    from tests.test_sweep import TINY, run_sweep, write_sweep

    searchpath = write_sweep(project, "tiny_pareto", """
question: How wide, for how few FLOPs?
objectives:
  - {metric: val/acc_best, direction: maximize}
  - {metric: perf/mflops, direction: minimize}
budget: perf/mflops<=0.2
space:
  model.channels: {type: categorical, choices: [[2], [4], [8]]}
base: [model=cnn]
sampler: {type: random, seed: 0}
pruner: {type: median}
n_trials: 3
""")
    args = ["sweep=tiny_pareto", searchpath, f"paths.root={project}", f"data.root={idx_root}",
            f"sweep.storage=sqlite:///{project}/optuna.db", *TINY, "model.fc=[]"]
    study = run_sweep(args)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3 and all(len(t.values) == 2 for t in complete)
    (folder,) = (project / "outputs" / "sweeps").glob("tiny_pareto*")  # named after the command line's overrides
    answer = (folder / "answer.md").read_text()
    assert "Pareto front" in answer and (folder / "pareto_front.png").stat().st_size > 0
    front = {t.number for t in study.best_trials if "imgrec.repeat_of" not in t.user_attrs}  # each setting once
    with (folder / "pareto_front.csv").open() as f:
        assert {int(r["trial"]) for r in csv.DictReader(f)} == front
    kept = [t for t in complete if t.values[1] <= 0.2]
    if kept:  # the budget's pick: the most accurate within it
        best = max(kept, key=lambda t: t.values[0])
        assert f"(trial {best.number})." in answer.split("Within the budget")[1].split("\n")[0]
    else:
        assert "No setting trained to the end keeps the budget" in answer


@pytest.mark.parametrize("change, message", [
    ("budget: perf/nope<=1", "sweep.budget: perf/nope is not an objective of this sweep"),
    ("budget: perf/mflops==1", "sweep.budget: write it as metric<=value or metric>=value"),
])
def test_a_budget_on_an_unknown_metric_is_one_line(project, change, message):
    from tests.test_sweep import make_sweep, write_sweep

    searchpath = write_sweep(project, "bad_pareto", f"""
question: Which?
objectives:
  - {{metric: val/acc_best, direction: maximize}}
  - {{metric: perf/mflops, direction: minimize}}
{change}
space:
  model.channels: {{type: categorical, choices: [[2], [4]]}}
base: [model=cnn]
sampler: {{type: random, seed: 0}}
pruner: {{type: none}}
n_trials: 2
""")
    with pytest.raises(ConfigError, match=message):
        make_sweep(["sweep=bad_pareto", searchpath, f"paths.root={project}"])


def test_an_objective_no_trial_logs_stops_the_sweep_in_one_line(project, idx_root):
    from tests.test_sweep import TINY, run_sweep, write_sweep

    searchpath = write_sweep(project, "missing_objective", """
question: Which?
objectives:
  - {metric: val/acc_best, direction: maximize}
  - {metric: perf/latency_msec, direction: minimize}
space:
  model.channels: {type: categorical, choices: [[2], [4]]}
base: [model=cnn]
sampler: {type: random, seed: 0}
pruner: {type: none}
n_trials: 2
""")
    with pytest.raises(ConfigError, match="sweep.objectives: trial 0's run logged no perf/latency_msec") as err:
        run_sweep(["sweep=missing_objective", searchpath, f"paths.root={project}", f"data.root={idx_root}",
                   f"sweep.storage=sqlite:///{project}/optuna.db", *TINY])
    assert "\n" not in str(err.value)
    (name,) = optuna.get_all_study_names(f"sqlite:///{project}/optuna.db")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{project}/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL"]


# -- the edge table -------------------------------------------------------------------------------------------------


def test_the_edge_table_measures_each_model_and_its_int8_export(project, idx_root):
    from tests.test_tables import TINY, read_csv, reproduction, table_runs

    args = ["table=edge", "budget=smoke", "table.rows=[teacher,student_distilled,teacher_pruned,teacher_int8]",
            f"paths.root={project}", f"data.root={idx_root}", *TINY]
    reproduction(args).run()
    runs_by_row = {r.data.tags["imgrec.row"]: r for r in table_runs(project)}
    assert set(runs_by_row) == {"teacher", "student_distilled", "teacher_pruned"}  # int8 rows export their model's run
    teacher = runs_by_row["teacher"].info.run_id
    assert runs_by_row["student_distilled"].data.params["task.teacher"] == f"runs:/{teacher}"
    assert runs_by_row["teacher_pruned"].data.params["model.checkpoint"] == f"runs:/{teacher}"
    rows = read_csv(project / "outputs/tables/edge_smoke.csv")
    for name in ("teacher", "teacher_pruned", "teacher_int8"):
        assert float(rows[name]["onnx_latency_ms"]) > 0 and float(rows[name]["onnx_mb"]) > 0
    assert float(rows["teacher_pruned"]["mflops"]) < float(rows["teacher"]["mflops"])
    assert float(rows["teacher_int8"]["onnx_mb"]) < float(rows["teacher"]["onnx_mb"])
    assert rows["teacher_int8"]["mflops"] == rows["teacher"]["mflops"]
    assert 0 <= float(rows["teacher_int8"]["ours_mean"]) <= 100


def test_pruned_net_needs_its_trained_model():
    with pytest.raises(ValueError, match="model.checkpoint is required"):
        PrunedNet((1, 28, 28), 10)
    trained = ConvNet((1, 28, 28), 10)
    spec = {"in_shape": (3, 32, 32), "num_classes": 10, "model": {}}
    with pytest.raises(ValueError, match="model.checkpoint: it takes 3x32x32 images"):
        PrunedNet((1, 28, 28), 10, checkpoint=(trained, spec))
