"""Optuna sweeps (imgrec.sweep): budget, pruning, failures, resume, several workers, MLflow parent and report.

Trials train tiny nets on tiny IDX data; tests of the driver's bookkeeping replace train() by a stub.
"""

import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from scipy import stats as sp

import imgrec.train
from imgrec.config import CONF_DIR
from imgrec.errors import ConfigError
from imgrec.jobs import open_job, split_overrides
from imgrec.sweep.constraint import VALUE_ATTR, Constraint
from imgrec.sweep.pruning import TrialReporter, launch_mode
from imgrec.sweep.report import SURPLUS_ATTR, Context, counted_trials, sweep_report
from imgrec.sweep.space import override_value, parse_space, suggest
from imgrec.sweep.storage import budget_is_spent, within_budget
from imgrec.tasks.classification import ClassificationTask
from imgrec.verbs import sweep as sweep_verb
from imgrec.verbs.sweep import Sweep, default_study_name
from tests.conftest import cli

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

GAN_SWEEP = "gan_capacity"  # needs a trained classifier and the DCGAN task: its own test below
SHIPPED = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml"))
TINY = [  # a two-epoch, two-batch trial of an 8-channel CNN
    "data=mnist", "trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2", "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu", "~callbacks.progress_bar", "~callbacks.model_summary", "~callbacks.classification_report",
    "logger.log_model=false", "data.batch_size=16", "data.eval_batch_size=32", "data.val_size=32",
    "model.channels=[8]", "model.fc=[16]",
]


@pytest.fixture
def home(project, idx_root):
    """A project folder with its own storage, outputs and MLflow store; returns the common overrides."""
    return [f"paths.root={project}", f"data.root={idx_root}", f"sweep.storage=sqlite:///{project}/optuna.db", *TINY]


def make_sweep(args: list[str]) -> Sweep:
    """What `imgrec sweep ARGS` sets up, before it opens the study."""
    job = open_job(sweep_verb.VERB, args)
    return Sweep(job.cfg, job.train_overrides)


def run_sweep(args: list[str]) -> optuna.Study:
    """`imgrec sweep ARGS` in this process, errors raised as they are; its study."""
    job = open_job(sweep_verb.VERB, args)
    return sweep_verb.sweep(job.cfg, job.train_overrides)[0]


def write_sweep(tmp_path: Path, name: str, text: str) -> str:
    """A sweep config of the test's own, found through Hydra's search path; returns that override."""
    (tmp_path / "conf" / "sweep").mkdir(parents=True, exist_ok=True)
    (tmp_path / "conf" / "sweep" / f"{name}.yaml").write_text(text)
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")


def sweep_runs(tmp_path: Path) -> tuple[list, list]:
    """(parent runs, child runs) in the imgrec experiment."""
    mlflow = client(tmp_path)
    experiment = mlflow.get_experiment_by_name("imgrec")
    all_runs = mlflow.search_runs([experiment.experiment_id])
    parents = [r for r in all_runs if r.data.tags.get("imgrec.role") == "sweep"]
    return parents, [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in counted_trials(study.get_trials())]


def stub_train(results: dict | None = None):
    """A train() that returns optimizer.lr (or results[trial number]) at once, recording what it got."""
    calls = []

    def fake(cfg, callbacks=(), tags=None):
        calls.append((cfg, tags))
        number = int(tags["optuna.trial_number"])
        outcome = (results or {}).get(number, float(cfg.optimizer.lr))
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    fake.calls = calls
    return fake


# -- configs and space ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [s for s in SHIPPED if s != GAN_SWEEP])
def test_every_shipped_sweep_composes_at_many_points_of_its_space(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = make_sweep([f"sweep={name}", f"paths.root={tmp_path}"])
    assert sweep.spec.question.endswith("?") and sweep.direction in ("maximize", "minimize")
    assert sweep.study_name == name and sweep.storage_url == f"sqlite:///{tmp_path}/outputs/sweeps/optuna.db"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):  # conditional keys (when:) must exist whenever they are sampled
        trial = study.ask()
        cfg = sweep.check(suggest(trial, sweep.params, sweep.base_value))
        assert cfg.optimized_metric == sweep.metric
        study.tell(trial, 0.0)


def test_interface_commands_compose_their_studies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = make_sweep(["sweep=optimizer", "model=resnet20", "data=cifar10", "sweep.n_trials=40", f"paths.root={tmp_path}"])
    assert sweep.spec.n_trials == 40 and sweep.base.hydra.runtime.choices.model == "resnet20"
    assert sweep.base.data.name == "cifar10"  # the command line wins over the sweep's base (data=fashion_mnist)
    assert sweep.study_name == "optimizer-model=resnet20,data=cifar10"  # another question than plain `optimizer`
    rnn = make_sweep(["sweep=rnn_capacity", "sweep.storage=postgresql://user:secret@host/db"])
    assert rnn.storage_id == "postgresql://user:***@host/db"
    assert isinstance(rnn.pruner(), optuna.pruners.MedianPruner)
    unpruned = make_sweep(["sweep=rnn_capacity", "sweep.pruner.type=none"])  # the sweep's median settings are dropped
    assert isinstance(unpruned.pruner(), optuna.pruners.NopPruner)


def test_overrides_are_split_and_sampled_values_written_as_hydra_reads_them():
    sweep, trial = split_overrides(["sweep=loss", "sweep.n_trials=3", "model=mlp", "hydra.searchpath=[x]", "~callbacks.x",
                                    "sweeps.x=1"], ("sweep",))
    assert sweep == ["sweep=loss", "sweep.n_trials=3", "hydra.searchpath=[x]"]
    assert trial == ["model=mlp", "hydra.searchpath=[x]", "~callbacks.x", "sweeps.x=1"]
    assert [override_value(v) for v in (1e-05, 3, True, None, [16, 32], "same", "two words")] == \
        ["1e-05", "3", "true", "null", "[16,32]", "same", "'two words'"]
    assert default_study_name("loss", ["data.root=/x", "trainer.accelerator=gpu"]) == "loss"  # where, not what
    assert default_study_name("loss", ["data=cifar10"]) == "loss-data=cifar10"


def test_a_space_with_conditions_and_list_choices_samples_what_applies():
    from omegaconf import OmegaConf

    space = OmegaConf.create({
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
        "optimizer.momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgd"}},
        "model.channels": {"type": "categorical", "choices": [[8], [8, 16]]},
        "optimizer.lr": {"type": "log-float", "low": 1e-4, "high": 1e-1},
    })
    params = parse_space(space)
    fixed = optuna.trial.FixedTrial({"optimizer": "adam", "model.channels": "[8,16]", "optimizer.lr": 0.01})
    assert suggest(fixed, params, lambda key: None) == {"optimizer": "adam", "model.channels": "[8,16]", "optimizer.lr": 0.01}
    assert params[3].distribution.log
    with pytest.raises(ConfigError, match=r"sweep.space.x: type must be"):
        parse_space(OmegaConf.create({"x": {"type": "gaussian"}}))


def test_trainers_that_rerun_the_command_per_rank_are_refused(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.chdir(tmp_path)
    modes = {spec: launch_mode(OmegaConf.create(dict(zip(("accelerator", "devices", "strategy"), spec))))
             for spec in (("cpu", "auto", "auto"), ("cpu", 2, "ddp_spawn"), ("gpu", 4, "auto"), ("cpu", 1, "ddp"))}
    assert list(modes.values()) == ["single", "spawn", "rerun", "rerun"]
    with pytest.raises(ConfigError, match="trainer.strategy=ddp_spawn"):
        make_sweep(["sweep=loss", "trainer=ddp_cpu"])


# -- budget ------------------------------------------------------------------------------------------

def test_the_budget_rule_is_exact_when_workers_race():
    study = optuna.create_study()
    a, b, c = study.ask(), study.ask(), study.ask()  # three workers asked at once; the budget is 2
    trials = study.get_trials(deepcopy=False)
    assert [within_budget(trials, t.number, 2) for t in (a, b, c)] == [True, True, False]
    c.set_user_attr(SURPLUS_ATTR, True)
    study.tell(c, state=TrialState.FAIL)
    study.tell(a, 1.0)
    study.tell(b, state=TrialState.FAIL)  # say b's worker died: its retry takes b's slot
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.trials[b.number])
    retry = study.ask()
    assert retry.params == {} and within_budget(study.get_trials(), retry.number, 2)
    study.tell(retry, 2.0)
    assert budget_is_spent(study.get_trials(), 2)
    assert [t.number for t in counted_trials(study.get_trials())] == [a.number, retry.number]
    # Topping up to 3: the surplus trial holds no slot, so the next new trial gets one.
    assert not budget_is_spent(study.get_trials(), 3)
    new = study.ask()
    assert within_budget(study.get_trials(), new.number, 3)


# -- the pruning callback ----------------------------------------------------------------------------

class StubTrial:
    def __init__(self, prune: bool):
        self.prune, self.reported = prune, []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.prune


class StubTrainer:
    def __init__(self, value, epoch=0, sanity=False):
        import torch

        self.callback_metrics, self.current_epoch, self.sanity_checking = {"val/acc": torch.tensor(value)}, epoch, sanity


def test_the_reporter_reports_each_epoch_and_prunes_when_told_or_on_nan():
    keep = TrialReporter(StubTrial(prune=False), "val/acc")
    keep.on_validation_end(StubTrainer(0.5, sanity=True), None)  # the sanity check is no epoch
    keep.on_validation_end(StubTrainer(0.5, epoch=0), None)
    keep.on_validation_end(StubTrainer(0.7, epoch=1), None)
    assert keep.trial.reported == [(0, 0.5), (1, pytest.approx(0.7))] and keep.epochs == 2
    with pytest.raises(optuna.TrialPruned, match="after epoch 4"):
        TrialReporter(StubTrial(prune=True), "val/acc").on_validation_end(StubTrainer(0.1, epoch=3), None)
    nan = TrialReporter(StubTrial(prune=False), "val/acc")
    with pytest.raises(optuna.TrialPruned, match="nan"):
        nan.on_validation_end(StubTrainer(math.nan), None)
    assert nan.trial.reported == []


# -- sweeps that train ---------------------------------------------------------------------------------

def test_a_four_trial_sweep_answers_its_question_in_mlflow(home, tmp_path):
    study = run_sweep(["sweep=loss", "sweep.n_trials=4", "sweep.study_name=loss4", *home])
    assert states(study) == ["COMPLETE"] * 4
    (parent,), children = sweep_runs(tmp_path)
    assert parent.info.status == "FINISHED" and parent.data.tags["imgrec.study"] == "loss4"
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == [0, 1, 2, 3]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" and c.info.run_name.startswith("trial_") for c in children)
    assert all(Path(c.data.tags["hydra.output_dir"]).parent == tmp_path / "outputs/sweeps/loss4" for c in children)
    best = study.best_trial
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert parent.data.tags["best.trial_number"] == str(best.number)
    artifacts = {a.path for a in client(tmp_path).list_artifacts(parent.info.run_id)}
    assert {"answer.md", "trials.csv", "optimization_history.png", "parallel_coordinate.png", "slice.png"} <= artifacts
    answer = Path(client(tmp_path).download_artifacts(parent.info.run_id, "answer.md")).read_text()
    assert "Which training loss" in answer and f"val/acc_best = {best.value:.4f} (trial {best.number}" in answer
    assert "4 completed, 0 pruned, 0 invalid, 0 failed" in answer and "Dataset: mnist" in answer
    assert answer == (tmp_path / "outputs/sweeps/loss4/answer.md").read_text()
    assert len((tmp_path / "outputs/sweeps/loss4/trials.csv").read_text().splitlines()) == 5


def test_the_pruner_stops_a_hopeless_trial_and_its_run_ends_killed(home, tmp_path):
    searchpath = write_sweep(tmp_path, "hopeless", """
question: Does a learning rate of 1e-9 learn anything?
metric: val/loss
direction: minimize
space:
  optimizer.lr: {type: categorical, choices: [0.01, 1.0e-9]}
base: [trainer.max_epochs=3]
enqueue: [{optimizer.lr: 0.01}, {optimizer.lr: 1.0e-9}]
sampler: {type: tpe, seed: 0}
pruner: {type: median, n_startup_trials: 1, n_warmup_steps: 0}
n_trials: 2
timeout: null
""")
    study = run_sweep([searchpath, "sweep=hopeless", "sweep.study_name=hopeless", *home, "trainer.max_epochs=3",
                              "trainer.limit_train_batches=4"])
    good, hopeless = counted_trials(study.get_trials())
    assert (good.state, hopeless.state) == (TrialState.COMPLETE, TrialState.PRUNED)
    assert hopeless.params == {"optimizer.lr": 1e-9} and hopeless.user_attrs["imgrec.epochs"] == 1  # of 3
    _, children = sweep_runs(tmp_path)
    run = next(c for c in children if c.data.tags["optuna.trial_number"] == str(hopeless.number))
    assert run.info.status == "KILLED" and run.data.tags["optuna.pruned"] == "true" and "error" not in run.data.tags
    answer = (tmp_path / "outputs/sweeps/hopeless/answer.md").read_text()
    assert "1 completed, 1 pruned, 0 invalid, 0 failed" in answer
    assert "| optimizer.lr | 1e-09 | 0 | 1 | - | - |" in answer  # always pruned: no metric, and the count says why


def test_confirming_the_top_settings_retrains_them_with_seeds_and_tests_the_best_against_the_runner_up(home, tmp_path):
    searchpath = write_sweep(tmp_path, "two_rates", """
question: Which learning rate?
metric: val/acc_best
direction: maximize
space:
  optimizer.lr: {type: categorical, choices: [0.01, 1.0e-5]}
base: []
enqueue: [{optimizer.lr: 0.01}, {optimizer.lr: 1.0e-5}]
sampler: {type: random, seed: 0}
pruner: {type: none}
n_trials: 2
timeout: null
""")
    args = [searchpath, "sweep=two_rates", *home, "sweep.confirm_top=2", "sweep.confirm_seeds=2"]
    study = run_sweep(args)
    assert states(study) == ["COMPLETE", "COMPLETE"]
    (folder,) = (tmp_path / "outputs/sweeps").glob("two_rates*")  # named after the command line's overrides too
    with (folder / "confirmed.csv").open() as f:
        confirmed = list(csv.DictReader(f))
    trial_runs = {t.number: t.user_attrs["imgrec.mlflow_run_id"] for t in study.trials}
    assert sorted(int(r["trial"]) for r in confirmed) == [0, 1]
    for row in confirmed:  # seed 0 is the trial's own run, reused; seed 1 is trained
        assert row["seeds"] == "0 1" and row["n"] == "2" and row["run_ids"].split()[0] == trial_runs[int(row["trial"])]
    _, children = sweep_runs(tmp_path)
    assert sorted(r.data.tags["imgrec.confirms"] for r in children if "imgrec.confirms" in r.data.tags) == ["0", "1"]
    best, runner_up = ([float(v) for v in r["values"].split()] for r in confirmed)
    p = sp.ttest_rel(best, runner_up).pvalue
    answer = (folder / "answer.md").read_text()
    assert "## Confirmed over 2 seeds" in answer
    said = "is better than" if p < 0.05 else "No significant difference between"
    assert said in answer and (f"p = {p:.3f}" in answer or "p < 0.001" in answer or math.isnan(p))
    with pytest.raises(ConfigError, match="sweep.confirm_top and sweep.confirm_seeds go together, each at least 2"):
        make_sweep([searchpath, "sweep=two_rates", *home, "sweep.confirm_top=1", "sweep.confirm_seeds=3"])


def test_failing_trials_are_recorded_and_the_sweep_goes_on(home, tmp_path, monkeypatch):
    searchpath = write_sweep(tmp_path, "risky", """
question: Which kernel size?
metric: val/acc_best
direction: maximize
space:
  model.kernel_size: {type: categorical, choices: [3, 5, 7, 29]}
base: [model.padding=valid]
enqueue: [{model.kernel_size: 29}, {model.kernel_size: 5}, {model.kernel_size: 7}, {model.kernel_size: 3}]
sampler: {type: random, seed: 0}
pruner: {type: none}
n_trials: 4
timeout: null
""")
    real_step, real_train = ClassificationTask.training_step, imgrec.train.train

    def step_exploding_at_kernel_5(self, batch, batch_idx):
        if self.net.features[0].kernel_size == (5, 5):
            raise RuntimeError("exploded on purpose")
        return real_step(self, batch, batch_idx)

    def train_nan_at_kernel_7(cfg, callbacks=(), tags=None):
        return math.nan if cfg.model.kernel_size == 7 else real_train(cfg, callbacks, tags)

    monkeypatch.setattr(ClassificationTask, "training_step", step_exploding_at_kernel_5)
    monkeypatch.setattr(imgrec.train, "train", train_nan_at_kernel_7)
    study = run_sweep([searchpath, "sweep=risky", "sweep.study_name=risky", *home])
    trials = counted_trials(study.get_trials())
    # an invalid setting is pruned (TPE ignores failed trials and would propose it again), bugs and NaNs fail
    assert [t.state.name for t in trials] == ["PRUNED", "FAIL", "FAIL", "COMPLETE"]
    assert trials[0].user_attrs["imgrec.invalid"] is True and "imgrec.invalid" not in trials[1].user_attrs
    errors = [t.user_attrs["imgrec.error"] for t in trials]
    assert "shrinks a 1x28x28 input to nothing" in errors[0]  # the model's ConfigError: no run was started
    assert errors[1] == "RuntimeError: exploded on purpose" and errors[2] == "val/acc_best is nan"
    _, children = sweep_runs(tmp_path)
    assert {c.data.tags["optuna.trial_number"]: c.info.status for c in children} == {"1": "FAILED", "3": "FINISHED"}
    answer = (tmp_path / "outputs/sweeps/risky/answer.md").read_text()
    assert "1 completed, 0 pruned, 1 invalid, 2 failed" in answer
    assert "Failed trial 1: RuntimeError: exploded on purpose" in answer and "Invalid (recorded as pruned" in answer


def test_a_setting_drawn_again_reuses_its_result_instead_of_training(home, tmp_path, monkeypatch):
    searchpath = write_sweep(tmp_path, "narrow", """
question: Which learning rate, of two?
metric: val/acc_best
direction: maximize
space:
  optimizer.lr: {type: categorical, choices: [0.5, 0.25]}
base: []
enqueue: [{optimizer.lr: 0.5}, {optimizer.lr: 0.25}, {optimizer.lr: 0.5}, {optimizer.lr: 0.25}, {optimizer.lr: 0.5}]
sampler: {type: tpe, seed: 0}
pruner: {type: none}
n_trials: 5
timeout: null
""")
    monkeypatch.setattr(imgrec.train, "train", stub_train())
    study = run_sweep([searchpath, "sweep=narrow", "sweep.study_name=narrow", *home])
    assert len(imgrec.train.train.calls) == 2  # each setting trained once
    trials = counted_trials(study.get_trials())
    assert [t.value for t in trials] == [0.5, 0.25, 0.5, 0.25, 0.5]
    assert [t.user_attrs.get("imgrec.repeat_of") for t in trials] == [None, None, 0, 1, 0]
    _, children = sweep_runs(tmp_path)  # still one child run per trial; a repeat's points at the original
    assert sorted(c.data.tags["optuna.trial_number"] for c in children) == ["2", "3", "4"]  # the stub logs no run
    assert all(c.data.tags["imgrec.repeat_of"] in ("0", "1") and c.info.status == "FINISHED" for c in children)
    answer = (tmp_path / "outputs/sweeps/narrow/answer.md").read_text()
    assert "best of 2 settings trained to the end" in answer and "3 trial(s) (2, 3, 4) drew a setting" in answer


def test_a_constrained_sweep_runs_its_reference_first_and_judges_each_trial_by_its_run(home, tmp_path):
    """sweep=adversarial_eps: standard training (eps 0) runs first; each trial's clean accuracy comes from its
    MLflow run, TPE is told how far it falls short, and the answer states the reference and the floor."""
    fast_attacks = ["task.adversarial.val_images=32", "task.adversarial.val_steps=2", "task.adversarial.test_steps=2"]
    study = run_sweep(["sweep=adversarial_eps", "sweep.n_trials=2", "sweep.study_name=adv", *home, *fast_attacks])
    reference, other = counted_trials(study.get_trials())
    assert [reference.params, other.params] == [{"task.adversarial.eps": 0.0}, {"task.adversarial.eps": 0.05}]
    _, children = sweep_runs(tmp_path)
    runs = {c.data.tags["optuna.trial_number"]: c.data.metrics for c in children}
    assert [reference.user_attrs[VALUE_ATTR], other.user_attrs[VALUE_ATTR]] == [runs["0"]["val/acc"], runs["1"]["val/acc"]]
    assert reference.value == pytest.approx(runs["0"]["val/robust_acc"])  # the sweep's metric: robust accuracy
    floor = runs["0"]["val/acc"] - 0.03
    assert reference.constraints == {"val/acc": pytest.approx(-0.03)}  # what TPE reads
    assert other.constraints == {"val/acc": pytest.approx(floor - runs["1"]["val/acc"])}
    answer = (tmp_path / "outputs/sweeps/adv/answer.md").read_text()
    assert "clean accuracy within 0.03 of standard training's?" in answer
    assert f"task.adversarial.eps=0 (trial 0: {runs['0']['val/acc']:.4f}), so at least {floor:.4f}" in answer
    assert "| trial | val/robust_acc | val/acc | setting |" in answer


def test_the_gan_capacity_sweep_composes_and_runs_two_tiny_trials(home, gray_classifier, tmp_path):
    """sweep=gan_capacity: DCGAN widths, latent size and learning rates, judged by the Frechet distance in the
    features of a classifier trained on the same data (task.fd_classifier)."""
    gan = [a for a in home if not a.startswith("model.")]  # the tiny CNN's keys are not DCGAN's
    with pytest.raises(ConfigError, match="sweep gan_capacity needs task.fd_classifier"):
        make_sweep(["sweep=gan_capacity", *gan])
    study = run_sweep(["sweep=gan_capacity", "sweep.n_trials=2", "sweep.study_name=gan2",
                              f"task.fd_classifier={gray_classifier['uri']}", *gan])
    trials = counted_trials(study.get_trials())
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert {"model.generator.width", "model.discriminator.width", "model.latent_dim"} <= set(trials[0].params)
    answer = (tmp_path / "outputs/sweeps/gan2/answer.md").read_text()
    assert "How wide should DCGAN" in answer and f"val/fd_classifier = {study.best_value:.4f}" in answer


def synthetic_study(*trials: tuple[float, float, float]) -> optuna.Study:
    """A finished study of (eps, robust accuracy, clean accuracy) trials."""
    study = optuna.create_study(direction="maximize")
    distributions = {"eps": optuna.distributions.FloatDistribution(0.0, 0.3)}
    study.add_trials([optuna.trial.create_trial(params={"eps": eps}, distributions=distributions, value=robust,
                                                user_attrs={VALUE_ATTR: clean}) for eps, robust, clean in trials])
    return study


def test_the_answer_is_the_best_setting_that_keeps_the_constraint(tmp_path):
    constraint = Constraint("val/acc", 0.03, {"eps": 0.0})
    ctx = Context(sweep="adv", study_name="adv", storage="memory", question="Which eps?", metric="val/robust_acc",
                  direction="maximize", n_trials=3, dataset="d", epochs="1", seed=0, sampler="tpe", pruner="none",
                  constraint=constraint)
    answer = sweep_report(synthetic_study((0.0, 0.05, 0.90), (0.1, 0.70, 0.88), (0.3, 0.80, 0.80)), ctx).markdown()
    assert "so at least 0.8700; 2 of 3 settings trained to the end keep it" in answer
    assert "The best setting is eps=0.1, with val/robust_acc = 0.7000 (trial 1, the best of 2 settings that keep it)" in answer
    assert "without the constraint, eps=0.3, reaches val/robust_acc = 0.8000 but val/acc = 0.8000" in answer
    without_reference = sweep_report(synthetic_study((0.1, 0.70, 0.88), (0.3, 0.80, 0.80)), ctx).markdown()
    assert "reference setting eps=0 has not completed" in without_reference
    assert "No setting trained to the end keeps the constraint" in without_reference


def test_a_constraint_is_checked_against_the_space():
    from omegaconf import OmegaConf

    spec = OmegaConf.create({"metric": "val/acc", "max_drop": 0.03, "reference": {"eps": 0.0}})
    assert Constraint.from_spec(spec, ["eps"]).reference == {"eps": 0.0}
    with pytest.raises(ConfigError, match="reference: lr not in sweep.space"):
        Constraint.from_spec(OmegaConf.merge(spec, {"reference": {"lr": 1.0}}), ["eps"])
    with pytest.raises(ConfigError, match="missing max_drop; unknown drop"):
        Constraint.from_spec(OmegaConf.create({"metric": "val/acc", "drop": 1, "reference": {"eps": 0}}), ["eps"])


# -- resume, dead workers, several workers -------------------------------------------------------------

@pytest.mark.parametrize("storage", ["sqlite:///{tmp}/resume.db", "journal:///{tmp}/resume.journal"])
def test_rerunning_resumes_the_study_and_tops_it_up_to_n_trials(home, tmp_path, monkeypatch, storage):
    monkeypatch.setattr(imgrec.train, "train", stub_train())
    args = ["sweep=optimizer", "sweep.study_name=topup", f"sweep.storage={storage.format(tmp=tmp_path)}", *home[:2]]
    run_sweep([*args, "sweep.n_trials=2"])
    study = run_sweep([*args, "sweep.n_trials=3"])
    assert states(study) == ["COMPLETE"] * 3 and [t.number for t in study.get_trials()] == [0, 1, 2]
    assert len(imgrec.train.train.calls) == 3
    (parent,), _ = sweep_runs(tmp_path)  # one parent, found again by every run
    assert parent.data.metrics["trials_complete"] == 3


def test_an_interrupted_trial_is_run_again_by_the_next_run(home, tmp_path, monkeypatch):
    args = ["sweep=optimizer", "sweep.study_name=ctrl_c", "sweep.n_trials=2", *home[:3]]
    monkeypatch.setattr(imgrec.train, "train", stub_train({1: KeyboardInterrupt()}))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(args)
    (parent,), _ = sweep_runs(tmp_path)
    assert parent.info.status == "KILLED"
    monkeypatch.setattr(imgrec.train, "train", stub_train())
    study = run_sweep(args)
    assert [(t.number, t.state.name) for t in counted_trials(study.get_trials())] == [(0, "COMPLETE"), (2, "COMPLETE")]
    assert study.trials[2].params == study.trials[1].params  # the same point, not a new one
    study = run_sweep(args)  # nothing left to do: no trial is added, not even a surplus one
    assert len(study.get_trials()) == 3 and len(imgrec.train.train.calls) == 1
    (parent,), _ = sweep_runs(tmp_path)
    assert parent.info.status == "FINISHED"


def test_a_dead_workers_trial_is_reclaimed_by_heartbeat_and_rerun(home, tmp_path, monkeypatch):
    class WorkerDied(BaseException):  # nothing catches it: the trial stays RUNNING, as if the process was killed
        pass

    args = ["sweep=optimizer", "sweep.study_name=dead", "sweep.n_trials=2", "sweep.heartbeat_interval=1",
            "sweep.grace_period=1", *home[:3]]
    monkeypatch.setattr(imgrec.train, "train", stub_train({1: WorkerDied()}))
    with pytest.raises(WorkerDied):
        run_sweep(args)
    time.sleep(2.5)  # past the grace period
    monkeypatch.setattr(imgrec.train, "train", stub_train())
    study = run_sweep(args)
    dead, retry = study.trials[1], study.trials[2]
    assert dead.state == TrialState.FAIL and retry.params == dead.params
    assert [(t.number, t.state.name) for t in counted_trials(study.get_trials())] == [(0, "COMPLETE"), (2, "COMPLETE")]


def sweep_py(*args: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen([Path(sys.executable).parent / "imgrec", "sweep", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def two_workers_finish_exactly(home, tmp_path, storage: str, n_trials: int = 4) -> None:
    args = ["sweep=loss", "sweep.study_name=shared", f"sweep.n_trials={n_trials}", *home, f"sweep.storage={storage}"]
    workers = [sweep_py(*args, cwd=tmp_path) for _ in range(2)]
    outputs = [w.communicate(timeout=400)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    study = optuna.load_study(study_name="shared", storage=storage)
    counted = counted_trials(study.get_trials())
    assert [t.state.name for t in counted] == ["COMPLETE"] * n_trials
    assert [t.number for t in counted] == list(range(n_trials))  # no gap: nothing lost
    surplus = [t for t in study.get_trials() if t not in counted]
    assert all(t.state == TrialState.FAIL and t.user_attrs[SURPLUS_ATTR] for t in surplus) and len(surplus) <= 1
    (parent,), children = sweep_runs(tmp_path)  # one parent, however the workers raced
    assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == list(range(n_trials))  # none twice
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all("## Answer" in o for o in outputs)


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study(home, tmp_path):
    two_workers_finish_exactly(home, tmp_path, f"sqlite:///{tmp_path}/shared.db")


@pytest.mark.slow
def test_two_worker_processes_share_one_postgresql_study(home, tmp_path, postgres_url):
    two_workers_finish_exactly(home, tmp_path, postgres_url, n_trials=3)


def test_report_only_rewrites_the_report_without_running_trials(home, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(imgrec.train, "train", stub_train())
    args = ["sweep=batch_size", "sweep.study_name=bs", "sweep.n_trials=1", *home[:3]]
    with pytest.raises(ConfigError, match="no study 'bs'"):
        run_sweep([*args, "sweep.report_only=true"])
    run_sweep(args)
    (tmp_path / "outputs/sweeps/bs/answer.md").unlink()
    capsys.readouterr()
    cli("sweep", *args, "sweep.n_trials=5", "sweep.report_only=true")
    assert len(imgrec.train.train.calls) == 1
    answer = (tmp_path / "outputs/sweeps/bs/answer.md").read_text()
    assert answer in capsys.readouterr().out
    assert "Parameter importances need at least 2 completed trials" in answer and "1 of 5 trials" in answer


@pytest.mark.slow
def test_the_dashboard_serves_every_study_of_the_storage(tmp_path):
    """`make dashboard` runs optuna-dashboard on the sweeps' storage: its API lists the studies."""
    import requests

    from tests.conftest import free_port, wait_for

    storage = f"sqlite:///{tmp_path}/optuna.db"
    for name in ("cnn_kernel", "loss"):
        optuna.create_study(study_name=name, storage=storage)
    port = free_port()
    if port is None:
        pytest.skip("no loopback port to bind")
    server = subprocess.Popen([Path(sys.executable).parent / "optuna-dashboard", storage, "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        studies = wait_for(server, lambda: requests.get(f"http://127.0.0.1:{port}/api/studies", timeout=5).json(),
                           "optuna-dashboard", timeout=60)["study_summaries"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert sorted(s["study_name"] for s in studies) == ["cnn_kernel", "loss"]


def test_a_database_that_goes_away_is_waited_for_not_a_failed_worker(tmp_path, monkeypatch, caplog):
    import sqlalchemy

    from imgrec.sweep.storage import PatientStorage

    storage = PatientStorage(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.create_study(storage=storage, study_name="restarts")
    real, lost = storage.scoped_session, {"calls": 3}

    class Lost:  # a session on a connection the restarting server closed
        def query(self, *args, **kwargs):
            raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))

        def rollback(self):
            pass

        def close(self):
            pass

    class Restarting:  # the next 3 sessions are lost ones, then the server is back
        def __call__(self):
            if lost["calls"]:
                lost["calls"] -= 1
                return Lost()
            return real()

        def __getattr__(self, name):
            return getattr(real, name)

    storage.scoped_session = Restarting()
    monkeypatch.setattr("imgrec.sweep.storage.time.sleep", lambda seconds: None)  # the backoff, not waited here
    with caplog.at_level("WARNING"):
        trial = study.ask()  # its calls fail 3 times, then the server is back
    study.tell(trial, 0.5)
    assert lost["calls"] == 0 and [t.value for t in study.trials] == [0.5]
    assert "unreachable" in caplog.text and "is back" in caplog.text
    storage.PATIENCE_S = 0.0  # out of patience: the error, as before
    lost["calls"] = 1
    with pytest.raises(optuna.exceptions.StorageInternalError):
        storage.get_all_trials(study._study_id)
