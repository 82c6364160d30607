"""Finding MLflow runs (`find_runs`: the one place a tag filter is written), and runs as tables: seeds
aggregated per recipe (paper tables, leaderboards).

A recipe is a run's config without its seed (tag `imgrec.recipe_hash`): runs that share it differ
only by seed, so their metric is summarised as mean ± sample standard deviation.
"""

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities import Run

from imgrec.tracking.identity import RECIPE_HASH_TAG, is_infra

STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")


def find_runs(client: MlflowClient, experiment_ids: str | Sequence[str], tags: Mapping[str, str] | None = None,
              status: str | None = None, newest_first: bool = True, limit: int | None = None,
              filter_string: str = "") -> list[Run]:
    """The runs with all of `tags` (and `status`: FINISHED, ..., or "!FINISHED" for any other), newest first
    (or oldest first), at most `limit` of them; `filter_string` adds a condition in the MLflow UI's syntax."""
    ids = [experiment_ids] if isinstance(experiment_ids, str) else list(experiment_ids)
    conditions = [f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()]
    if status is not None:
        negated = status.startswith("!")
        if status.lstrip("!") not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)} (or !STATUS), got {status!r}")
        conditions.append(f"attributes.status {'!=' if negated else '='} '{status.lstrip('!')}'")
    if filter_string:
        conditions.append(filter_string)
    order = [f"attributes.start_time {'DESC' if newest_first else 'ASC'}"]
    if not ids:
        return []
    runs, token = [], None
    while True:  # search_runs returns at most 1000 runs a call
        page = client.search_runs(ids, " and ".join(conditions), order_by=order, page_token=token,
                                  max_results=min(limit, 1000) if limit else 1000)
        runs.extend(page)
        token = page.token
        if not token or (limit and len(runs) >= limit):
            return runs[:limit] if limit else runs


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float | None  # None for a single value: no spread to report
    n: int

    def format(self, digits: int = 4) -> str:
        if self.n == 0:
            return "-"
        spread = f" ± {self.std:.{digits}f}" if self.std is not None else ""
        return f"{self.mean:.{digits}f}{spread}"


def summarize(values: Iterable[float]) -> Summary:
    """Mean and sample standard deviation (n - 1) of the finite values; NaNs are dropped."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return Summary(math.nan, None, 0)
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return Summary(statistics.fmean(finite), std, len(finite))


def experiment_ids(client: MlflowClient, names: Sequence[str]) -> list[str]:
    """Ids of the named experiments (all active ones when `names` is empty); an unknown name is an error."""
    if not names:
        return [e.experiment_id for e in client.search_experiments()]
    ids = []
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            known = ", ".join(sorted(e.name for e in client.search_experiments()))
            raise LookupError(f"no MLflow experiment '{name}' (known: {known or 'none'})")
        ids.append(experiment.experiment_id)
    return ids


@dataclass(frozen=True)
class Entry:
    """One recipe of a leaderboard: its runs (one per seed) and their summarised metric."""

    recipe: str
    name: str  # the run name of its first run (model-data)
    params: dict[str, str]  # the recipe's params (without seed and tracking details)
    summary: Summary
    seeds: tuple[str, ...]
    run_ids: tuple[str, ...]


def recipe_params(run: Run) -> dict[str, str]:
    """The run's params that define its recipe: neither infrastructure (imgrec.tracking.identity) nor the seed."""
    return {k: v for k, v in run.data.params.items() if k != "seed" and not is_infra(k)}


def leaderboard(runs: Sequence[Run], metric: str, higher_is_better: bool = True) -> list[Entry]:
    """Runs grouped by recipe (runs without the tag stand alone), best mean first; runs lacking the metric are
    left out."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if metric in run.data.metrics:
            groups.setdefault(run.data.tags.get(RECIPE_HASH_TAG, run.info.run_id), []).append(run)
    entries = []
    for recipe, members in groups.items():
        members.sort(key=lambda r: r.info.start_time)
        entries.append(Entry(
            recipe=recipe,
            name=members[0].data.tags.get("mlflow.runName", members[0].info.run_name or ""),
            params=recipe_params(members[0]),
            summary=summarize(r.data.metrics[metric] for r in members),
            seeds=tuple(r.data.params.get("seed", "?") for r in members),
            run_ids=tuple(r.info.run_id for r in members),
        ))
    sign = -1.0 if higher_is_better else 1.0
    return sorted(entries, key=lambda e: (sign * e.summary.mean, e.name))


def varying_params(entries: Sequence[Entry], limit: int = 8) -> list[str]:
    """The params whose values differ between entries (what tells the recipes apart), at most `limit`."""
    keys = sorted({k for e in entries for k in e.params})
    varying = [k for k in keys if len({e.params.get(k) for e in entries}) > 1]
    return varying[:limit]
