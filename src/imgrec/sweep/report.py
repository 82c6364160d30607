"""What a sweep found, as an imgrec.report.Report: answer.md (the sweep's question answered in one paragraph with
the numbers behind it, then the evidence and the caveats), trials.csv, param_importances.csv and Optuna's plots.

Written to the sweep's folder (outputs/sweeps/<study>/) and to the study's MLflow parent run
whenever a worker ends, or on `sweep.report_only=true`.

Which trials count: Optuna keeps every trial it ever created, including surplus trials (created by
a worker racing past the budget; never run) and trials reclaimed from dead workers (re-run as
retries). `counted_trials` drops both, leaving one trial per slot of the budget.
"""

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import mean

import optuna
from optuna.trial import FrozenTrial, TrialState

from imgrec import stats
from imgrec.report import Column, Figure, Report, Section, Table, text_column
from imgrec.sweep.constraint import VALUE_ATTR, Constraint

SURPLUS_ATTR = "imgrec.surplus"  # user attr of a trial created past the budget (never run)
REPEAT_ATTR = "imgrec.repeat_of"  # user attr of a trial whose setting an earlier trial ran: its result was reused
INVALID_ATTR = "imgrec.invalid"  # user attr of a setting that cannot be built (recorded as pruned)
RETRIED_FROM = "failed_trial"  # system attr Optuna's retry callback gives a re-queued trial
PLOTS = {
    "optimization_history.png": "plot_optimization_history",
    "parallel_coordinate.png": "plot_parallel_coordinate",
    "slice.png": "plot_slice",
    "param_importances.png": "plot_param_importances",
}


def is_surplus(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(SURPLUS_ATTR))


def is_repeat(trial: FrozenTrial) -> bool:
    return REPEAT_ATTR in trial.user_attrs


def is_invalid(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(INVALID_ATTR))


def is_retry(trial: FrozenTrial) -> bool:
    return RETRIED_FROM in trial.system_attrs


def counted_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """One trial per budget slot: no surplus trials, and a retried trial only through its retry."""
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials if not is_surplus(t) and t.number not in replaced]


@dataclass
class Confirmed:
    """One of the top settings trained with several seeds (sweep.confirm_top, sweep.confirm_seeds)."""

    trial: int
    params: dict
    seeds: list[int]
    values: list[float]  # the sweep's metric, one per seed
    run_ids: list[str]

    @property
    def summary(self) -> stats.Summary:
        return stats.describe(self.values)


@dataclass
class Confirmation:
    settings: list[Confirmed]  # in the trials' order, best first

    def ranked(self, direction: str) -> list[Confirmed]:
        return sorted(self.settings, key=lambda c: c.summary.mean, reverse=direction == "maximize")

    def best_against_runner_up(self, direction: str) -> tuple[Confirmed, Confirmed, stats.Comparison] | None:
        """The paired t-test (the same seeds) of the best setting over the seeds against the runner-up."""
        ranked = self.ranked(direction)
        if len(ranked) < 2:
            return None
        best, runner_up = ranked[:2]
        return best, runner_up, stats.paired_t(best.values, runner_up.values)


@dataclass
class Context:
    """What the answer needs to say besides the trials: the question and how it was asked."""

    sweep: str
    study_name: str
    storage: str
    question: str
    metric: str
    direction: str  # maximize | minimize
    n_trials: int
    dataset: str  # e.g. "fashion_mnist (55000 training / 5000 validation images)"
    epochs: str  # e.g. "3"
    seed: object
    sampler: str
    pruner: str
    base_overrides: list[str] = field(default_factory=list)  # the sweep's base, applied to every trial
    user_overrides: list[str] = field(default_factory=list)  # the command line's, applied to every trial
    notes: list[str] = field(default_factory=list)  # more caveats, e.g. epochs limited to a few batches
    constraint: Constraint | None = None  # a metric each answer must keep (imgrec.sweep.constraint)
    confirmation: Confirmation | None = None  # the top settings with several seeds each


def sweep_report(study: optuna.Study, ctx: Context) -> Report:
    """The study as it stands: answer.md and what backs it, to publish to the sweep's folder and parent run. Its
    metrics (best value, trial counts, importances) are logged at step = finished trials, so top-ups draw a
    history; the best params go to tags (MLflow params are immutable, and the best changes as the study grows)."""
    trials = counted_trials(study.get_trials(deepcopy=False))
    # each setting once: a repeat reused an earlier trial's result
    complete = ranked([t for t in trials if t.state == TrialState.COMPLETE and not is_repeat(t)], ctx.direction)
    importances, why_not = param_importances(study, len(complete))
    figures = plots(study, with_importances=bool(importances))
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    answer = answer_paragraph(ctx, answerable(ctx, trials, complete), importances, why_not)
    if ctx.constraint is not None:
        answer = constrained_paragraph(ctx, trials, complete) + " " + answer
    sections = [Section("Answer", answer)]
    if ctx.confirmation is not None:
        sections.append(confirmation_section(ctx, ctx.confirmation))
    if complete:
        sections += [Section("Evidence", f"Top trials by {ctx.metric} ({ctx.direction}):", top_table(ctx, complete))]
        choices = per_choice_table(ctx, trials, complete)
        if choices is not None:
            sections.append(Section(text="Per choice (each setting once):", table=choices))
    if importances:
        sections.append(Section(text="Parameter importance (fANOVA, sums to 1):", table=Table(
            "param_importances", [text_column("parameter", "param"), Column("importance", "importance", ".3f")],
            [{"param": k, "importance": v} for k, v in importances.items()])))
    if figures:
        sections.append(Section(text="Plots: " + ", ".join(f"`{f.name}`" for f in figures) + "."))
    sections.append(Section("Caveats", bullets=caveats(ctx, trials, counts)))
    return Report(f"Sweep `{ctx.sweep}`: {ctx.question}", sections, figures=figures, name="answer",
                  data=[Table("trials", [], trials_rows(study, trials))],
                  step=sum(t.state.is_finished() for t in trials), **best_of(trials, answerable(ctx, trials, complete),
                                                                             importances))


def best_of(trials, complete, importances) -> dict:
    """The report's metrics and tags: trial counts, importances, the best value and its setting."""
    metrics = {f"trials_{s.name.lower()}": sum(t.state == s for t in trials)
               for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    metrics.update({f"importance/{k}": v for k, v in importances.items()})
    tags = {}
    if complete:
        best = complete[0]
        metrics["best_value"] = best.value
        tags.update({"best.trial_number": str(best.number), "best.value": f"{best.value:.6g}"})
        tags.update({f"best.params.{k}": fmt(v) for k, v in best.params.items()})
    return {"metrics": metrics, "tags": tags}


def trials_rows(study: optuna.Study, trials: list[FrozenTrial]) -> list[dict]:
    """Every counted trial as Optuna's trials_dataframe has it: number, value, state, duration, params, user attrs."""
    import csv

    frame = study.trials_dataframe(attrs=("number", "value", "state", "duration", "params", "user_attrs"))
    if not len(frame):
        return []
    frame = frame[frame["number"].isin({t.number for t in trials})]
    frame = frame.drop(columns=[c for c in frame.columns if c == f"user_attrs_{SURPLUS_ATTR}"])
    return list(csv.DictReader(io.StringIO(frame.to_csv(index=False))))


def answerable(ctx: Context, trials: list[FrozenTrial], complete: list[FrozenTrial]) -> list[FrozenTrial]:
    """The completed trials an answer may name, best first: with a constraint, the feasible ones."""
    return complete if ctx.constraint is None else ctx.constraint.feasible(complete, trials)


def ranked(trials: list[FrozenTrial], direction: str) -> list[FrozenTrial]:
    return sorted(trials, key=lambda t: t.value, reverse=direction == "maximize")


def importance_evaluator() -> optuna.importance.BaseImportanceEvaluator:
    """fANOVA (Hutter et al. 2014), seeded so that a report is reproducible; the plot uses the same."""
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def param_importances(study: optuna.Study, n_complete: int) -> tuple[dict[str, float], str]:
    """fANOVA importances (seeded, so a report is reproducible), or why there are none."""
    if n_complete < 2:
        return {}, f"Parameter importances need at least 2 completed trials (there are {n_complete})"
    try:
        return optuna.importance.get_param_importances(study, evaluator=importance_evaluator()), ""
    except (ValueError, RuntimeError) as err:  # e.g. every completed trial has the same parameters
        return {}, f"Parameter importances could not be computed: {str(err).rstrip('.')}"


def plots(study: optuna.Study, with_importances: bool) -> list[Figure]:
    """Optuna's matplotlib plots (no plotly needed); one that cannot be drawn is skipped by the report."""
    import numpy as np
    from optuna.visualization import matplotlib as optuna_plots

    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []

    def drawing(function: str):
        def draw():
            kwargs = {"evaluator": importance_evaluator()} if function == "plot_param_importances" else {}
            with warnings.catch_warnings():  # e.g. "identical low and high ylims" when all trials agree
                warnings.simplefilter("ignore", UserWarning)
                axes = getattr(optuna_plots, function)(study, **kwargs)
            return np.atleast_1d(axes).ravel()[0].figure

        return draw

    return [Figure(name, drawing(function)) for name, function in PLOTS.items()
            if name != "param_importances.png" or with_importances]


def fmt(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def setting(params: dict, keys: Sequence[str] | None = None) -> str:
    keys = list(params) if keys is None else keys
    return ", ".join(f"{k}={fmt(params[k])}" for k in keys) or "the base config"


def top_table(ctx: Context, complete: list[FrozenTrial]) -> Table:
    """The top trials, or with a constraint all of them, with the constraint's metric beside."""
    columns = [Column("trial", "trial"), Column(ctx.metric, "value", ".4f")]
    if ctx.constraint is not None:
        columns.append(Column(ctx.constraint.metric, "kept", ".4f"))
    rows = [{"trial": t.number, "value": t.value, "kept": t.user_attrs.get(VALUE_ATTR), "setting": setting(t.params)}
            for t in (complete if ctx.constraint is not None else complete[:5])]
    return Table("top_trials", [*columns, text_column("setting", "setting")], rows)


def fmt_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def constrained_paragraph(ctx: Context, trials: list[FrozenTrial], complete: list[FrozenTrial]) -> str:
    """What the constraint allows: the reference, the floor, and what the unconstrained best would cost."""
    constraint = ctx.constraint
    reference = constraint.reference_trial(trials)
    if reference is None:
        return (f"The reference setting {setting(constraint.reference)} has not completed with {constraint.metric}, "
                f"so no trial can be judged against the constraint yet.")
    floor = constraint.floor(trials)
    feasible = constraint.feasible(complete, trials)
    text = (f"Constraint: {constraint.metric} at most {constraint.max_drop:.4g} below the reference setting "
            f"{setting(constraint.reference)} (trial {reference.number}: {reference.user_attrs[VALUE_ATTR]:.4f}), "
            f"so at least {floor:.4f}; {len(feasible)} of {len(complete)} settings trained to the end keep it.")
    if complete and feasible and complete[0].number != feasible[0].number:
        over = complete[0]
        text += (f" The best setting without the constraint, {setting(over.params)}, reaches {ctx.metric} = "
                 f"{over.value:.4f} but {constraint.metric} = {fmt_value(over.user_attrs.get(VALUE_ATTR))}.")
    return text


def confirmation_section(ctx: Context, confirmation: Confirmation) -> Section:
    """The top settings over their seeds, and whether the best is significantly better than the runner-up."""
    ranked = confirmation.ranked(ctx.direction)
    rows = [{"trial": c.trial, "setting": setting(c.params), "n": c.summary.n, "mean": c.summary.mean,
             "std": c.summary.std, "ci_low": c.summary.ci_low, "ci_high": c.summary.ci_high,
             "seeds": " ".join(map(str, c.seeds)), "values": " ".join(f"{v:.4f}" for v in c.values),
             "run_ids": " ".join(c.run_ids)} for c in ranked]
    table = Table("confirmed", [Column("trial", "trial"), text_column("setting", "setting"), Column("seeds", "n"),
                                Column(f"{ctx.metric} mean", "mean", ".4f"), Column("std", "std", ".4f"),
                                Column("95% CI", lambda r: f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]")], rows)
    pair = confirmation.best_against_runner_up(ctx.direction)
    if pair is None:
        text = "Only one setting could be confirmed."
    else:
        best, runner_up, comparison = pair
        said = stats.verdict(f"{setting(best.params)} (trial {best.trial})",
                             f"{setting(runner_up.params)} (trial {runner_up.trial})", comparison,
                             ctx.direction == "maximize", digits=4)
        text = (f"{said[0].upper()}{said[1:]}. Over {comparison.n_a} seeds, the best setting "
                + ("is confirmed." if comparison.p < stats.ALPHA else
                   "cannot be told apart from the runner-up: treat them as equals, or add seeds."))
    return Section(f"Confirmed over {len(ranked[0].seeds)} seeds", text=text, table=table)


def answer_paragraph(ctx, complete, importances, why_not) -> str:
    """`complete`: the trials the answer may name, best first (imgrec.sweep.report.answerable)."""
    if not complete and ctx.constraint is not None:
        return "No setting trained to the end keeps the constraint, so this sweep has no answer within it."
    if not complete:
        return (f"No trial has completed yet, so this sweep cannot answer its question: see the caveats "
                f"for what happened to the {ctx.n_trials} trials of the budget.")
    among = "settings that keep it" if ctx.constraint is not None else "settings trained to the end"
    best = complete[0]
    text = (f"The best setting is {setting(best.params)}, with {ctx.metric} = {best.value:.4f} "
            f"(trial {best.number}, the best of {len(complete)} {among}).")
    runners = [t for t in complete[1:] if t.params != best.params][:2]
    if runners:
        described = []
        for t in runners:
            differing = [k for k in t.params if best.params.get(k) != t.params[k]]
            tie = ", a tie" if t.value == best.value else ""
            described.append(f"{setting(t.params, differing)} reached {t.value:.4f} (trial {t.number}{tie})")
        text += " Runners-up: " + "; ".join(described) + "."
        top = min(len(complete), 5)
        spread = abs(best.value - complete[top - 1].value)
        text += (f" The top {top} trials are within {spread:.4f} of each other." if spread > 0 else
                 f" The top {top} trials all reached the same value: this sweep cannot tell them apart.")
    if importances:
        order = [f"{k} ({v:.2f})" for k, v in importances.items()]
        text += f" By fANOVA importance, {order[0]} mattered most" + (", then " + ", ".join(order[1:]) if len(order) > 1 else "") + "."
    elif why_not:
        text += f" {why_not}."
    return text


def per_choice_table(ctx, trials, complete) -> Table | None:
    """For each categorical parameter: how each of its choices did (best and mean of the metric over the
    settings trained to the end), and how often the pruner stopped it early (a choice that is always
    pruned has no metric, and the count says why)."""
    stopped = [t for t in trials if t.state == TrialState.PRUNED and not is_invalid(t) and not is_repeat(t)]
    rows = []
    for key, dist in complete[0].distributions.items():
        if not isinstance(dist, optuna.distributions.CategoricalDistribution):
            continue
        for choice in dist.choices:
            values = [t.value for t in complete if t.params.get(key) == choice]
            pruned = sum(t.params.get(key) == choice for t in stopped)
            if values or pruned:
                best = (max(values) if ctx.direction == "maximize" else min(values)) if values else None
                rows.append({"param": key, "choice": fmt(choice), "complete": len(values), "pruned": pruned,
                             "best": best, "mean": mean(values) if values else None})
    if not rows:
        return None
    columns = [text_column("parameter", "param"), text_column("choice", "choice"), Column("trained to the end", "complete"),
               Column("pruned", "pruned"), Column(f"best {ctx.metric}", "best", ".4f"), Column("mean", "mean", ".4f")]
    return Table("per_choice", columns, rows)


def caveats(ctx: Context, trials: list[FrozenTrial], counts: dict) -> list[str]:
    done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] + counts[TrialState.FAIL]
    invalid = sum(is_invalid(t) for t in trials)
    notes = [f"{done} of the {ctx.n_trials} trials of the budget finished: {counts[TrialState.COMPLETE]} completed, "
             f"{counts[TrialState.PRUNED] - invalid} pruned, {invalid} invalid, {counts[TrialState.FAIL]} failed"
             + (f" ({counts[TrialState.RUNNING]} still running)" if counts[TrialState.RUNNING] else "") + "."]
    if len(trials) < ctx.n_trials:
        notes.append(f"The budget is not used up ({len(trials)} of {ctx.n_trials} trials): "
                     "re-run the same command to top the study up.")
    repeats = [t.number for t in trials if is_repeat(t)]
    if repeats:
        notes.append(f"{len(repeats)} trial(s) ({', '.join(map(str, repeats))}) drew a setting an earlier trial had "
                     "run; with the same seed the result is the same, so it was reused, not trained again.")
    for kind, which in (("Failed", lambda t: t.state == TrialState.FAIL),
                        ("Invalid (recorded as pruned, so the sampler steers away from them)", is_invalid)):
        errors: dict[str, list[int]] = {}
        for t in trials:
            if which(t) and not is_repeat(t):
                errors.setdefault(str(t.user_attrs.get("imgrec.error") or "no error recorded"), []).append(t.number)
        for error, numbers in list(errors.items())[:5]:
            notes.append(f"{kind} trial{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}: {error}")
    pruned = sorted({t.user_attrs.get("imgrec.epochs") or 0 for t in trials
                     if t.state == TrialState.PRUNED and not is_invalid(t)})
    stopped = ""
    if pruned:
        span = str(pruned[0]) if len(pruned) == 1 else f"{pruned[0]}-{pruned[-1]}"
        stopped = f"; pruned trials stopped after {span} epoch(s), so the ranking favours settings that learn fast"
    notes.append(f"Each trial trains for at most {ctx.epochs} epoch(s){stopped}.")
    notes.append(f"Dataset: {ctx.dataset}." + (f" {ctx.metric} is measured on the validation split, not the "
                 "test set (each trial's test metrics are in its MLflow run)." if ctx.metric.startswith("val/") else ""))
    notes.append(f"One run per setting (seed={ctx.seed}): differences smaller than the seed-to-seed spread of "
                 "the metric are not evidence; re-run the top settings with a few seeds before concluding.")
    notes += ctx.notes
    notes.append(f"Sampler {ctx.sampler}, pruner {ctx.pruner}; study '{ctx.study_name}' in {ctx.storage}.")
    for what, overrides in (("The sweep's base", ctx.base_overrides), ("The command line", ctx.user_overrides)):
        if overrides:
            notes.append(f"{what} set, for every trial: " + " ".join(f"`{o}`" for o in overrides) + ".")
    return notes
