"""`imgrec sweep sweep=NAME [training overrides] [sweep.KEY=VALUE ...]`: an Optuna sweep that answers a
hyperparameter question (conf/sweep/NAME.yaml: its question, metric, search space, base overrides, sampler,
pruner and budget).

Each trial is the run `imgrec train` makes with the sweep's base, the command line's and the sampled overrides
(later wins), a child run of the study's parent run; the pruner stops hopeless trials after each validation
epoch. The answer (answer.md: the best setting, the runners-up, what mattered, the caveats), trials.csv and
Optuna's plots go to outputs/sweeps/<study>/ and to the parent run. Run the same command in several processes
or machines to share one study (sweep.storage); re-running tops a study up to sweep.n_trials. Watch it with
`make dashboard`. One worker (see imgrec.sweep for how workers share a study).

A best trial is one draw of the noise: `sweep.confirm_top=K sweep.confirm_seeds=S` trains the K best settings
with S seeds each (reusing finished runs) and the answer says whether the best is significantly better than the
runner-up (paired t-test over the seeds).
"""

import gc
import hashlib
import json
import logging
import math
import os
import re
import secrets
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from imgrec import config, launch
from imgrec.config import COMPOSE_ERRORS, hydra_message, override_key
from imgrec.console import command_line
from imgrec.errors import ConfigError, ImgrecError, one_line
from imgrec.jobs import Job, TrainJob, Verb, reuse_or_train
from imgrec.progress import log_to_file
from imgrec.report import Report
from imgrec.sweep import report as sweep_report
from imgrec.sweep.constraint import VALUE_ATTR, Constraint
from imgrec.sweep.pareto import Budget, objectives_of, pareto_report
from imgrec.sweep.pruning import TrialReporter, launch_mode
from imgrec.sweep.report import INVALID_ATTR, REPEAT_ATTR
from imgrec.sweep.space import encode_choice, first_point, override_value, parse_space, suggest
from imgrec.sweep.storage import budget_is_spent, describe_storage, heartbeat, make_storage, retrying, within_budget
from imgrec.tracking import run as tracking
from imgrec.tracking.driver_run import DriverRun
from imgrec.tracking.identity import is_infra
from imgrec.tracking.store import open_store
from imgrec.validation import validate

log = logging.getLogger(__name__)
PARENT_ATTR, FINGERPRINT_ATTR, CREATED_ATTR = "imgrec.mlflow_parent_run_id", "imgrec.fingerprint", "imgrec.created_at"
PARENT_WAIT_S = 120  # how long a worker waits for the study's creator to publish the parent run
SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "nsga2": optuna.samplers.NSGAIISampler}
PRUNERS = {"median": optuna.pruners.MedianPruner, "percentile": optuna.pruners.PercentilePruner,
           "hyperband": optuna.pruners.HyperbandPruner, "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
           "none": optuna.pruners.NopPruner}


class ObjectiveNotLogged(ConfigError):
    """A multi-objective sweep names a metric its trials do not log."""


# -- configs ------------------------------------------------------------------------------------------

def result_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that change what a trial measures: not infrastructure (imgrec.tracking.identity), which
    may differ between the workers of one study and does not make the default study name."""
    return [o for o in overrides if not is_infra(override_key(o))]


def default_study_name(sweep: str, user_overrides: Sequence[str]) -> str:
    """The sweep's name, plus the command line's result-changing overrides: a sweep on other data or
    another model is another study, not more trials of the first one."""
    extra = ",".join(result_overrides(user_overrides))
    if not extra:
        return sweep
    return f"{sweep}-{extra}" if len(extra) <= 60 else f"{sweep}-{hashlib.sha1(extra.encode()).hexdigest()[:10]}"


class Sweep:
    """One worker of one study: set up (study, parent run), run trials until the budget is spent, report."""

    def __init__(self, cfg: DictConfig, train_overrides: Sequence[str]):
        """`cfg`: conf/verbs/sweep.yaml composed (`sweep=NAME` picks conf/sweep/NAME.yaml); `train_overrides`: the
        command line's overrides of every trial."""
        self.user_overrides = list(train_overrides)
        self.name, self.spec = cfg.hydra.runtime.choices.sweep, cfg.sweep
        for key in ("question", "n_trials", *(() if self.spec.get("objectives") else ("metric", "direction"))):
            if OmegaConf.is_missing(self.spec, key) or self.spec.get(key) is None:
                raise ConfigError(f"sweep.{key} is not set in conf/sweep/{self.name}.yaml")
        # one objective (metric, direction), or several (objectives): then the answer is a Pareto front
        self.objectives = objectives_of(self.spec)
        self.metric, self.direction = self.objectives[0].metric, self.objectives[0].direction
        self.multi = len(self.objectives) > 1
        self.budget = Budget.parse(self.spec.get("budget"), self.objectives)
        if self.budget is not None and not self.multi:
            raise ConfigError("sweep.budget goes with several sweep.objectives: it picks a setting on their front")
        if self.multi and any(self.spec.get(k) for k in ("constraint", "confirm_top", "folds")):
            raise ConfigError("sweep.objectives: a multi-objective sweep takes no constraint, confirm_top or folds "
                              "(its answer is a front of settings; a budget picks one)")
        self.params = parse_space(self.spec.space)
        self.constraint = Constraint.from_spec(self.spec.get("constraint"), [p.key for p in self.params])
        self.base_overrides = [str(o) for o in self.spec.base]
        self.study_name = self.spec.study_name or default_study_name(self.name, self.user_overrides)
        if "'" in self.study_name or "`" in self.study_name:
            raise ConfigError(f"sweep.study_name must not contain quotes: {self.study_name}")
        self.base = self.check({})  # base + command line: what `when` and the report look up
        root = Path(self.base.paths.root)
        self.storage_url = self.spec.storage or f"sqlite:///{root}/outputs/sweeps/optuna.db"  # beside the runs
        self.storage_id = describe_storage(self.storage_url)
        self.dir = root / "outputs" / "sweeps" / re.sub(r"[^\w.=,+-]", "_", self.study_name)
        self.check(suggest(optuna.trial.FixedTrial(first_point(self.params)), self.params, self.base_value))
        self.check_confirmation()
        self.confirmation: sweep_report.Confirmation | None = None
        HydraConfig.instance().set_config(self.base)

    def check_confirmation(self) -> None:
        top, seeds = self.spec.get("confirm_top"), self.spec.get("confirm_seeds")
        if not top and not seeds:
            return
        if not top or not seeds or int(top) < 2 or int(seeds) < 2:
            raise ConfigError(f"sweep.confirm_top and sweep.confirm_seeds go together, each at least 2 (the best and "
                              f"the runner-up, two seeds each), got {top} and {seeds}")
        if self.spec.folds:
            raise ConfigError("sweep.confirm_top: cross-validated trials (sweep.folds) are confirmed by their folds")
        if self.base.seed is None:
            raise ConfigError("sweep.confirm_seeds needs seeded runs (seed=0): the seeds are seed, seed+1, ...")

    def overrides(self, values: dict) -> list[str]:
        """Base, then command line, then sampled values: later wins. The sweep's metric is what train() returns."""
        sampled = [f"{k}={override_value(v)}" for k, v in values.items()]
        return [*self.base_overrides, *self.user_overrides, *sampled, f"optimized_metric={self.metric}"]

    def check(self, values: dict) -> DictConfig:
        """Compose a point of the space before any trial runs, so a typo fails now, in one line."""
        try:
            cfg = config.compose(self.overrides(values), Path("unused"))
        except ConfigError as err:
            raise ConfigError(f"sweep {self.name} (its base, the command line or its space): {err}") from None
        validate(cfg)
        if launch_mode(cfg.trainer) == "rerun" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("sweep: this trainer starts its ranks by re-running the command (ddp, torchrun), "
                              "which would start more sweep workers; use trainer.strategy=ddp_spawn (unpruned) "
                              "or one device per trial and several workers")
        for key, hint in (self.spec.get("requires") or {}).items():
            if OmegaConf.select(cfg, key) is None:
                raise ConfigError(f"sweep {self.name} needs {key}: {hint}")
        return cfg

    def base_value(self, key: str) -> Any:
        choices = self.base.hydra.runtime.choices
        return choices[key] if key in choices else OmegaConf.select(self.base, key)

    def fingerprint(self) -> str:
        what = {"base": self.base_overrides, "overrides": result_overrides(self.user_overrides),
                "space": OmegaConf.to_container(self.spec.space, resolve=True),
                "metric": self.metric, "direction": self.direction}
        if self.multi:  # a study of other objectives is another study
            what["objectives"] = [[o.metric, o.direction] for o in self.objectives]
        if self.spec.get("folds"):  # cross-validated trials measure another metric (a mean over folds)
            what["folds"] = self.spec.folds
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def sampler(self, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
        kwargs = OmegaConf.to_container(self.spec.sampler, resolve=True)
        kind = kwargs.pop("type", "tpe")
        if kind not in SAMPLERS:
            raise ConfigError(f"sweep.sampler.type must be one of {', '.join(SAMPLERS)}, got {kind!r}")
        if kwargs.get("seed") is not None:
            kwargs["seed"] += seed_offset
        return SAMPLERS[kind](**kwargs)

    def pruner(self) -> optuna.pruners.BasePruner:
        kwargs = OmegaConf.to_container(self.spec.pruner, resolve=True)
        kind = kwargs.pop("type", "median")
        if kind not in PRUNERS:
            raise ConfigError(f"sweep.pruner.type must be one of {', '.join(PRUNERS)}, got {kind!r}")
        if kind == "none" or self.multi:  # pruner.type=none turns pruning off; Optuna prunes one objective only
            return optuna.pruners.NopPruner()
        return PRUNERS[kind](**kwargs)

    # -- setup

    def open_study(self) -> bool:
        """Create the study or load it; True in the one process that created it."""
        self.storage = make_storage(self.storage_url, self.spec)
        kwargs = dict(study_name=self.study_name, storage=self.storage, sampler=self.sampler(), pruner=self.pruner())
        if self.spec.report_only:
            try:
                self.study = optuna.load_study(**kwargs)
            except KeyError:
                raise ConfigError(f"no study '{self.study_name}' in {self.storage_id}: run the sweep first "
                                  "(with the same overrides, or name it with sweep.study_name)") from None
            return False
        try:  # = create_study(load_if_exists=True), but tells which process created the study
            directions = [o.direction for o in self.objectives]
            self.study = retrying(lambda: optuna.create_study(directions=directions, **kwargs))
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            self.study, created = optuna.load_study(**kwargs), False
        if [d.name.lower() for d in self.study.directions] != [o.direction for o in self.objectives]:
            raise ConfigError(f"study '{self.study_name}' {' and '.join(d.name.lower() for d in self.study.directions)}"
                              f"s; the sweep's objectives say {' and '.join(o.direction for o in self.objectives)}")
        if created:
            self.study.set_user_attr(CREATED_ATTR, time.time())
            self.study.set_user_attr(FINGERPRINT_ATTR, self.fingerprint())
            for attr, value in (("sweep", self.name), ("question", self.spec.question), ("metric", self.metric),
                                ("overrides", self.base_overrides + self.user_overrides)):
                self.study.set_user_attr(f"imgrec.{attr}", value)
            queued = [{k: encode_choice(v) for k, v in OmegaConf.to_container(values).items()}
                      for values in self.spec.get("enqueue") or []]
            if self.constraint is not None:  # the reference runs first: the other trials are judged against it
                queued = [self.constraint.reference, *(q for q in queued if q != self.constraint.reference)]
            for values in queued:
                self.study.enqueue_trial(values)
        return created

    def open_parent(self, created: bool) -> None:
        client = open_store(self.base.logger.tracking_uri)
        run_id = self.study.user_attrs.get(PARENT_ATTR)
        deadline = self.study.user_attrs.get(CREATED_ATTR, 0) + PARENT_WAIT_S
        while run_id is None and not created and time.time() < deadline:  # the creator is publishing it
            time.sleep(1.0)
            run_id = self.study.user_attrs.get(PARENT_ATTR)
        if self.study.user_attrs.get(FINGERPRINT_ATTR, self.fingerprint()) != self.fingerprint():
            raise ConfigError(f"study '{self.study_name}' in {self.storage_id} was run with another base, space, metric "
                              f"or overrides ({self.study.user_attrs.get('imgrec.overrides')}); to start a new study "
                              "pass sweep.study_name=NEW_NAME")
        self.parent = DriverRun(client, run_id) if run_id else None
        if self.parent is None or not self.parent.usable():  # the creator died first, or the run was deleted
            experiment = tracking.experiment_id(client, self.base.logger.experiment_name, self.base.logger.artifact_location)
            self.parent = DriverRun.find_or_create(
                client, experiment, f"sweep-{self.study_name}", {"imgrec.study": self.study_name, "imgrec.storage": self.storage_id},
                extra_tags={"imgrec.role": "sweep", "imgrec.sweep": self.name, "mlflow.note.content": self.spec.question,
                            "command": command_line()},
                params=self.parent_params())
            self.study.set_user_attr(PARENT_ATTR, self.parent.run_id)

    def parent_params(self) -> dict[str, Any]:
        return {"sweep": self.name, "study_name": self.study_name, "storage": self.storage_id,
                "question": self.spec.question, "metric": self.metric, "direction": self.direction,
                **({"objectives": json.dumps([[o.metric, o.direction] for o in self.objectives])} if self.multi else {}),
                "sampler": json.dumps(OmegaConf.to_container(self.spec.sampler)),
                "pruner": json.dumps(OmegaConf.to_container(self.spec.pruner)),
                "space": json.dumps(OmegaConf.to_container(self.spec.space)),
                "base_overrides": " ".join(self.base_overrides), "overrides": " ".join(self.user_overrides)}

    # -- trials

    def optimize(self) -> None:
        """Ask, check the budget, run, tell, until the study's n_trials are spent (or sweep.timeout)."""
        start, n_trials = time.monotonic(), self.spec.n_trials
        while self.spec.timeout is None or time.monotonic() - start < self.spec.timeout:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)  # dead workers' trials -> re-queued retries
            if budget_is_spent(self.study.get_trials(deepcopy=False), n_trials):
                break
            with warnings.catch_warnings():  # "heartbeat is for optimize()": heartbeat() below does its part
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                trial = self.study.ask()
            if not within_budget(self.study.get_trials(deepcopy=False), trial.number, n_trials):
                trial.set_user_attr(sweep_report.SURPLUS_ATTR, True)  # another worker took the last slot
                self.study.tell(trial, state=TrialState.FAIL)
                continue
            # Trial k samples with seed + k: reproducible, and workers never draw identical random points.
            self.study.sampler = self.sampler(seed_offset=trial.number)
            self.run_trial(trial)
            gc.collect()

    def run_trial(self, trial: optuna.Trial) -> None:
        values = suggest(trial, self.params, self.base_value)
        earlier = self.same_setting(trial)
        if earlier is not None:
            self.reuse(trial, earlier)
            return
        output_dir = self.dir / f"trial_{trial.number}"
        if output_dir.exists():  # e.g. a study of the same name in another storage wrote here
            output_dir = output_dir.with_name(f"{output_dir.name}_{secrets.token_hex(3)}")
        trial.set_user_attr("imgrec.overrides", [f"{k}={override_value(v)}" for k, v in values.items()])
        trial.set_user_attr("imgrec.output_dir", str(output_dir))
        log.info("trial %d: %s", trial.number, sweep_report.setting(values))
        state, value, error, reporter, run_id = TrialState.FAIL, None, None, None, None
        with heartbeat(self.storage, trial), log_to_file(output_dir):
            try:
                if self.spec.folds:  # the mean over k folds, each a run under the trial's cross-validation run
                    value, run_id = self.cross_validate(values, trial, output_dir)
                else:
                    job = TrainJob(self.overrides(values), f"trial_{trial.number}", f"trial {trial.number}",
                                   tags=self.child_tags(trial))
                    prunable = launch_mode(job.cfg.trainer) == "single" and not self.multi
                    reporter = TrialReporter(trial, self.metric) if prunable else None
                    try:
                        value = job.train(output_dir, callbacks=[reporter] if reporter else [])
                    finally:
                        run = job.started_run(self.parent.client)
                        run_id = run.info.run_id if run else None
                if self.multi and run_id:  # every objective from the run
                    value = self.objective_values(trial, run_id)
                if value is None or not all(math.isfinite(v) for v in ([value] if not self.multi else value)):
                    error = f"{self.metric} is {value}" + (" (not logged by this model/task)" if value is None else "")
                else:
                    state = TrialState.COMPLETE
            except optuna.TrialPruned as pruned:
                state, error = TrialState.PRUNED, None
                log.info("trial %d pruned: %s", trial.number, pruned)
            except (KeyboardInterrupt, SystemExit):
                self.requeue(trial)
                raise
            except ObjectiveNotLogged as err:  # the sweep's own mistake, not this setting's: stop the sweep
                self.finish_trial(trial, TrialState.FAIL, None, str(err), reporter, run_id)
                raise
            except (ConfigError, *COMPOSE_ERRORS) as err:  # e.g. kernel too big for the image
                # pruned, not failed: TPE ignores failed trials and would keep proposing this setting
                state, error = TrialState.PRUNED, hydra_message(err)
                trial.set_user_attr(INVALID_ATTR, True)
                log.info("trial %d: invalid setting: %s", trial.number, error)
            except ImgrecError as err:  # e.g. missing data: not this setting's fault
                error = hydra_message(err)
            except Exception as err:  # a bug in this trial's combination: record it, go on with the sweep
                log.exception("trial %d failed", trial.number)
                error = f"{type(err).__name__}: {one_line(err)}"
        self.finish_trial(trial, state, value, error, reporter, run_id)

    def objective_values(self, trial: optuna.Trial, run_id: str) -> list[float]:
        """Every objective's value, from the trial's run. A metric it did not log is a mistake in the sweep, not in
        this trial (every trial logs the same metrics): the sweep stops, in one line."""
        logged = self.parent.client.get_run(run_id).data.metrics
        missing = [o.metric for o in self.objectives if o.metric not in logged]
        if missing:
            raise ObjectiveNotLogged(f"sweep.objectives: trial {trial.number}'s run logged no {', '.join(missing)} (it logs "
                              f"{', '.join(sorted(logged)[:12])}, ...); an objective is a metric every trial logs")
        return [logged[o.metric] for o in self.objectives]

    def cross_validate(self, values: dict, trial: optuna.Trial, output_dir: Path) -> tuple[float | None, str | None]:
        """(the mean over the folds, the cross-validation's parent run: the trial's run)."""
        from imgrec.verbs.cv import CrossValidation

        tags = {k: v for k, v in self.child_tags(trial).items() if k != "mlflow.runName"}
        mean, report = CrossValidation(int(self.spec.folds), self.overrides(values), parent_tags=tags,
                                       out_dir=output_dir).run()
        return mean, report.run_id

    def same_setting(self, trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        """An earlier trial that ran these params to the end (complete, pruned or invalid), if the
        runs are seeded: TPE re-proposes its favourites, and a seeded re-run would only repeat the result."""
        if self.base.seed is None:
            return None
        for earlier in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if earlier.number != trial.number and earlier.params == trial.params:
                return earlier
        return None

    def reuse(self, trial: optuna.Trial, earlier: optuna.trial.FrozenTrial) -> None:
        """Record `earlier`'s result for `trial` (and a child run pointing at its run), training nothing."""
        for step, value in sorted(earlier.intermediate_values.items()):
            trial.report(value, step)
        for key in ("imgrec.error", "imgrec.epochs", INVALID_ATTR):
            if key in earlier.user_attrs:
                trial.set_user_attr(key, earlier.user_attrs[key])
        if self.constraint is not None and earlier.state == TrialState.COMPLETE:
            self.judge(trial, earlier.user_attrs.get(VALUE_ATTR))
        trial.set_user_attr(REPEAT_ATTR, earlier.number)
        original = earlier.user_attrs.get("imgrec.mlflow_run_id")
        run = DriverRun.create(self.parent.client, self.parent.experiment_id, f"trial_{trial.number}",
                               {**self.child_tags(trial), REPEAT_ATTR: str(original or earlier.number)})
        done = earlier.state == TrialState.COMPLETE
        run.log({o.metric: v for o, v in zip(self.objectives, earlier.values)} if done else {})
        run.client.set_terminated(run.run_id, "FINISHED" if earlier.state == TrialState.COMPLETE else "KILLED")
        trial.set_user_attr("imgrec.mlflow_run_id", run.run_id)
        self.study.tell(trial, (earlier.values if self.multi else earlier.value) if done else None, state=earlier.state)
        log.info("trial %d: the setting of trial %d again; its result is reused, nothing trained", trial.number, earlier.number)

    def judge(self, trial: optuna.Trial, value: float | None) -> None:
        """Record the trial's value of the constraint's metric, and tell TPE how far it falls short (before
        the trial is told: samplers read constraints then; imgrec.sweep.constraint)."""
        trial.set_user_attr(VALUE_ATTR, value)
        trials = self.study.get_trials(deepcopy=False)
        trial.set_constraint(self.constraint.metric, self.constraint.shortfall(trial.params, value, trials))

    def child_tags(self, trial: optuna.Trial) -> dict[str, str]:
        return {"mlflow.parentRunId": self.parent.run_id, "mlflow.runName": f"trial_{trial.number}",
                "optuna.study_name": self.study_name, "optuna.trial_number": str(trial.number),
                "imgrec.study": self.study_name}

    def finish_trial(self, trial, state: TrialState, value, error: str | None, reporter, run_id: str | None) -> None:
        trial.set_user_attr("imgrec.mlflow_run_id", run_id)
        trial.set_user_attr("imgrec.error", error)
        trial.set_user_attr("imgrec.epochs", reporter.epochs if reporter else None)
        if self.constraint is not None and state == TrialState.COMPLETE and run_id:
            self.judge(trial, self.parent.client.get_run(run_id).data.metrics.get(self.constraint.metric))
        try:
            self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:  # reclaimed as stale meanwhile: its retry will run
            log.warning("trial %d was failed by another worker (missed heartbeats); not recorded", trial.number)
            return
        if run_id:
            self.parent.client.set_tag(run_id, "optuna.state", state.name)
        if state == TrialState.PRUNED and run_id:  # train() ended it FAILED: it was stopped on purpose
            self.parent.client.set_terminated(run_id, "KILLED")
            self.parent.client.set_tag(run_id, "optuna.pruned", "true")
            if "error" in self.parent.client.get_run(run_id).data.tags:  # "TrialPruned: ...": not an error
                self.parent.client.delete_tag(run_id, "error")
        if state == TrialState.FAIL:
            log.warning("trial %d failed: %s", trial.number, error)
        elif state == TrialState.COMPLETE and self.multi:
            log.info("trial %d: %s", trial.number, ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(self.objectives, value)))
        elif state == TrialState.COMPLETE:
            try:
                best = self.study.best_trial  # with a constraint: the best feasible trial
            except ValueError:  # no trial is feasible yet
                log.info("trial %d: %s=%.4f (no feasible trial yet)", trial.number, self.metric, value)
                return
            log.info("trial %d: %s=%.4f (best %.4f, trial %d)", trial.number, self.metric, value, best.value, best.number)

    def requeue(self, trial: optuna.Trial) -> None:
        """Ctrl-C: fail the trial and queue a retry of it, so the next run of the command re-runs it."""
        trial.set_user_attr("imgrec.error", "interrupted")
        self.study.tell(trial, state=TrialState.FAIL)
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.RetryHeartbeatStaleTrialCallback()(self.study, frozen)

    # -- confirming the answer

    def confirm(self) -> sweep_report.Confirmation | None:
        """sweep.confirm_top=K sweep.confirm_seeds=S: the K best settings trained with seeds seed .. seed+S-1 (a
        setting's trial is its first seed's run, reused like any finished run of the same config), then the best
        against the runner-up by the paired t-test over the seeds."""
        top, n_seeds = self.spec.get("confirm_top"), self.spec.get("confirm_seeds")
        if not top:
            return None
        trials = sweep_report.counted_trials(self.study.get_trials(deepcopy=False))
        complete = [t for t in trials if t.state == TrialState.COMPLETE and not sweep_report.is_repeat(t)]
        best = sweep_report.answerable(self.context(), trials, sweep_report.ranked(complete, self.direction))
        seeds = [int(self.base.seed) + i for i in range(int(n_seeds))]
        settings = [sweep_report.Confirmed(t.number, t.params, seeds, [], []) for t in best[:int(top)]]
        for confirmed, trial in zip(settings, best):
            overrides = [*self.overrides({}), *trial.user_attrs.get("imgrec.overrides", [])]
            for seed in seeds:
                job = TrainJob([*overrides, f"seed={seed}"], f"confirm_{trial.number}_seed_{seed}",
                               f"confirming trial {trial.number}, seed {seed}", reuse={},
                               tags={"imgrec.study": self.study_name, "imgrec.confirms": str(trial.number)})
                run = reuse_or_train(job, self.parent.client, self.dir / f"confirm_{trial.number}" / f"seed_{seed}",
                                     self.parent.run_id)
                confirmed.values.append(run.data.metrics.get(self.metric, math.nan))
                confirmed.run_ids.append(run.info.run_id)
        return sweep_report.Confirmation(settings)

    # -- report

    def context(self) -> sweep_report.Context:
        cfg, searched, notes = self.base, {p.key for p in self.params}, []
        epochs = "the searched trainer.max_epochs" if "trainer.max_epochs" in searched else str(cfg.trainer.max_epochs)
        for key, what in (("limit_train_batches", "each epoch trains on"), ("limit_val_batches", "the metric is measured on")):
            if cfg.trainer.get(key, 1.0) != 1.0:
                notes.append(f"trainer.{key}={cfg.trainer[key]}: {what} part of the data only.")
        data = cfg.data
        dataset = str(data.get("name", cfg.hydra.runtime.choices.get("data")))
        if "val_size" in data:
            held_out = f"{data.val_size:.1%} of the training set" if isinstance(data.val_size, float) else \
                f"{data.val_size} images of the training set"
            dataset += f" ({held_out} held out for validation"
            dataset += f", {data.train_size} training images kept)" if data.get("train_size") else ")"
        sampler = self.spec.sampler
        return sweep_report.Context(
            sweep=self.name, study_name=self.study_name, storage=self.storage_id, question=self.spec.question,
            metric=self.metric, direction=self.direction, n_trials=self.spec.n_trials, dataset=dataset,
            epochs=epochs, seed=cfg.seed, sampler=f"{sampler.get('type', 'tpe')} (seed {sampler.get('seed')})",
            pruner=str(self.spec.pruner.get("type", "median")), base_overrides=self.base_overrides,
            user_overrides=self.user_overrides, notes=notes, constraint=self.constraint,
            confirmation=self.confirmation)

    def report(self) -> Report:
        if self.multi:
            report = pareto_report(self.study, self.context(), self.objectives, self.budget)
        else:
            report = sweep_report.sweep_report(self.study, self.context())
        report.publish(self.dir, self.parent)
        log.info("sweep report: %s (MLflow parent run %s)", self.dir / "answer.md", self.parent.run_id)
        return report

    def report_after_run(self) -> Report | None:
        """The report, or None when it cannot be written: that must not hide why the sweep ended."""
        try:
            return self.report()
        except Exception:
            log.exception("the sweep report could not be written")
            return None


def sweep(cfg: DictConfig, train_overrides: Sequence[str]) -> tuple[optuna.Study, Report]:
    """Run one sweep worker (or only its report, sweep.report_only=true); (the study, the report)."""
    worker = Sweep(cfg, train_overrides)
    created = worker.open_study()
    worker.open_parent(created)
    if worker.spec.report_only:
        return worker.study, worker.report()
    log.info("study '%s' in %s: %d trials in all; MLflow parent run %s",
             worker.study_name, worker.storage_id, worker.spec.n_trials, worker.parent.run_id)
    with worker.parent.running():
        try:
            worker.optimize()
            worker.confirmation = worker.confirm()
        finally:  # however this worker ends, the report shows the study as it stands
            report = worker.report_after_run()
        if report is None:
            raise ImgrecError("the sweep's report could not be written (see above); sweep.report_only=true retries it")
    return worker.study, report


def run(job: Job) -> Report:
    launcher = job.cfg.launcher
    if launcher.kind != "local":  # launcher.workers sweep workers on one study, then the report of it
        storage, base = str(job.cfg.sweep.storage or ""), config.compose(list(job.train_overrides), "unused")
        launch.check(launcher, str(base.logger.tracking_uri))
        if launcher.kind == "slurm" and not storage.startswith(("postgresql", "mysql")):
            raise ConfigError(f"launcher=slurm: sweep.storage={storage or 'null (a SQLite file)'} cannot be shared by "
                              "the nodes; give a database, sweep.storage=postgresql://user@host/db")
        own = [a for a in job.own_overrides if not a.split("=", 1)[0].lstrip("+~").startswith("launcher")]
        argv = [*own, *job.train_overrides, "launcher=local", "sweep.confirm_top=null", "sweep.confirm_seeds=null"]
        failures = launch.run_workers("sweep", argv, launcher, Path(base.paths.root) / "outputs" / "launch")
        report = sweep(job.cfg, job.train_overrides)[1]  # the budget is spent: the confirmation (if asked), the report
        report.failures = [*report.failures, *failures]
        return report
    return sweep(job.cfg, job.train_overrides)[1]


VERB = Verb("sweep", __doc__, run, train_keys=("sweep", "launcher"),
            required={"sweep": "a search space of conf/sweep/ ({})".format(", ".join(config.options("sweep")))},
            choices={"sweep": config.options("sweep")},
            interrupted="the running trial is queued again; re-run the same command to resume")
