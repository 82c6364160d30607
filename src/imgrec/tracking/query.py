"""Finding MLflow runs (`find_runs`: the one place a tag filter is written), the experiments they are in, and
the params that make a run's recipe (its config without the seed and the infrastructure keys).
"""

from collections.abc import Mapping, Sequence

from mlflow import MlflowClient
from mlflow.entities import Run

from imgrec.tracking.identity import is_infra

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


def recipe_params(run: Run) -> dict[str, str]:
    """The run's params that define its recipe: neither infrastructure (imgrec.tracking.identity) nor the seed."""
    return {k: v for k, v in run.data.params.items() if k != "seed" and not is_infra(k)}
