"""Multi-objective sweeps (conf/sweep/NAME.yaml `objectives`): several metrics, each with its direction, say accuracy
up and batch-1 latency down. Optuna keeps one direction per objective (a multi-objective study, searched by TPE
or NSGA-II); no setting is best at everything, so the answer is the Pareto front: the settings no other setting
beats on every objective at once. A `budget` ("perf/latency_ms<=0.1") names the best setting within it, best by
the first objective.

Trials are not pruned (Optuna prunes single-objective studies only). Every objective is read from the trial's
MLflow run; a metric no trial logs stops the sweep in one line.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from imgrec.errors import ConfigError
from imgrec.report import Column, Figure, Report, Section, Table, text_column
from imgrec.sweep import report as sweep_report

DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "maximize" else a < b


@dataclass(frozen=True)
class Budget:
    """`metric<=value` or `metric>=value`: what the setting the answer names must keep."""

    metric: str
    operator: str
    value: float

    @classmethod
    def parse(cls, text: str | None, objectives: Sequence[Objective]) -> "Budget | None":
        if text is None:
            return None
        found = re.fullmatch(r"\s*([\w/.]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*", str(text))
        if not found:
            raise ConfigError(f"sweep.budget: write it as metric<=value or metric>=value, got {text!r}")
        metric = found.group(1)
        if metric not in [o.metric for o in objectives]:
            raise ConfigError(f"sweep.budget: {metric} is not an objective of this sweep "
                              f"({', '.join(o.metric for o in objectives)})")
        return cls(metric, found.group(2), float(found.group(3)))

    def kept(self, value: float) -> bool:
        return value <= self.value if self.operator == "<=" else value >= self.value

    def __str__(self) -> str:
        return f"{self.metric} {self.operator} {self.value:g}"


def objectives_of(spec: DictConfig) -> list[Objective]:
    """The sweep's objectives: `objectives` ([{metric, direction}, ...]), else its one `metric` and `direction`."""
    if spec.get("objectives"):
        entries = OmegaConf.to_container(spec.objectives, resolve=True)
        objectives = []
        for entry in entries:
            if not isinstance(entry, dict) or set(entry) != {"metric", "direction"}:
                raise ConfigError(f"sweep.objectives: each is {{metric: ..., direction: maximize|minimize}}, got {entry}")
            objectives.append(Objective(str(entry["metric"]), str(entry["direction"])))
        if len({o.metric for o in objectives}) != len(objectives):
            raise ConfigError("sweep.objectives: each metric once")
    else:
        objectives = [Objective(str(spec.metric), str(spec.direction))]
    for objective in objectives:
        if objective.direction not in DIRECTIONS:
            raise ConfigError(f"sweep direction of {objective.metric} must be maximize or minimize, "
                              f"got {objective.direction}")
    return objectives


def ranked(trials: Sequence[FrozenTrial], objectives: Sequence[Objective]) -> list[FrozenTrial]:
    """Best first by the first objective."""
    return sorted(trials, key=lambda t: t.values[0], reverse=objectives[0].direction == "maximize")


def within(trials: Sequence[FrozenTrial], objectives: Sequence[Objective], budget: Budget) -> FrozenTrial | None:
    """The best trial by the first objective among those that keep the budget."""
    index = [o.metric for o in objectives].index(budget.metric)
    kept = ranked([t for t in trials if budget.kept(t.values[index])], objectives)
    return kept[0] if kept else None


def pareto_report(study: optuna.Study, ctx: "sweep_report.Context", objectives: Sequence[Objective],
                  budget: Budget | None) -> Report:
    trials = sweep_report.counted_trials(study.get_trials(deepcopy=False))
    complete = [t for t in trials if t.state == TrialState.COMPLETE and not sweep_report.is_repeat(t)]
    counted = {t.number for t in complete}
    pareto = ranked([t for t in study.best_trials if t.number in counted], objectives)  # Optuna's front
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    metrics = [o.metric for o in objectives]
    rows = [{"trial": t.number, **{m: v for m, v in zip(metrics, t.values)}, "setting": sweep_report.setting(t.params)}
            for t in pareto]
    columns = [Column("trial", "trial"), *(Column(f"{m} ({o.direction[:3]})", m, ".4g") for m, o in
                                           zip(metrics, objectives)), text_column("setting", "setting")]
    answer = answer_paragraph(ctx, complete, pareto, objectives, budget)
    sections = [Section("Answer", answer)]
    if pareto:
        sections.append(Section("Pareto front", f"{len(pareto)} of {len(complete)} settings trained to the end are "
                                "not beaten on every objective by another:", Table("pareto_front", columns, rows)))
    sections.append(Section("Caveats", bullets=sweep_report.caveats(ctx, trials, counts)))
    figures = [Figure("pareto_front.png", lambda: pareto_figure(study, objectives, budget))] \
        if len(objectives) == 2 and complete else []
    tags = {"front.trial_numbers": " ".join(str(t.number) for t in pareto)}
    chosen = within(complete, objectives, budget) if budget else None
    if chosen is not None:
        tags.update({"budget.trial_number": str(chosen.number), **{f"budget.params.{k}": sweep_report.fmt(v)
                                                                   for k, v in chosen.params.items()}})
    return Report(f"Sweep `{ctx.sweep}`: {ctx.question}", sections, figures=figures, name="answer",
                  data=[Table("trials", [], sweep_report.trials_rows(study, trials))],
                  step=sum(t.state.is_finished() for t in trials), tags=tags,
                  metrics={"front_size": len(pareto), "trials_complete": len(complete)})


def answer_paragraph(ctx, complete, pareto, objectives, budget) -> str:
    if not complete:
        return (f"No trial has completed yet, so this sweep cannot answer its question: see the caveats for what "
                f"happened to the {ctx.n_trials} trials of the budget.")
    names = " and ".join(f"{o.metric} ({o.direction})" for o in objectives)
    text = (f"{len(pareto)} of {len(complete)} settings trained to the end form the Pareto front of {names}: "
            "no other setting is at least as good on every objective and better on one.")
    ends = [pareto[0], pareto[-1]] if len(pareto) > 1 else pareto
    text += " " + "; ".join(f"{sweep_report.setting(t.params)} gives " + ", ".join(
        f"{o.metric} {v:.4g}" for o, v in zip(objectives, t.values)) + f" (trial {t.number})" for t in ends) + "."
    if budget is not None:
        chosen = within(complete, objectives, budget)
        text += (f" Within the budget {budget}, the best by {objectives[0].metric} is "
                 f"{sweep_report.setting(chosen.params)}: " + ", ".join(
                     f"{o.metric} {v:.4g}" for o, v in zip(objectives, chosen.values)) + f" (trial {chosen.number})."
                 if chosen is not None else f" No setting trained to the end keeps the budget {budget}.")
    return text


def pareto_figure(study, objectives, budget):
    """Optuna's plot of the front (the first objective across, the second up, dominated settings too), the budget
    drawn in."""
    from optuna.visualization import matplotlib as optuna_plots

    ax = optuna_plots.plot_pareto_front(study, target_names=[o.metric for o in objectives])
    if budget is not None:
        line = ax.axvline if budget.metric == objectives[0].metric else ax.axhline
        line(budget.value, color="tab:blue", linestyle=":", label=f"budget {budget}")
        ax.legend(fontsize=8)
    return ax.figure
