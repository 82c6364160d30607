"""`imgrec compare [experiment=NAME] [filter="..."] [metric=test/acc] [direction=minimize] [output=board.csv]`:
a leaderboard of finished MLflow runs, seeds aggregated per recipe.

Rows are recipes (the resolved config without its seed, tag imgrec.recipe_hash): the metric is the mean ± standard
deviation over the recipe's finished runs, best first; columns show the params that differ between the recipes
(or `params`). `filter` takes the syntax of the MLflow UI's search box. The leaderboard is printed; `output`
also writes it as Markdown, CSV or LaTeX (by its extension).
"""

from pathlib import Path

from mlflow.exceptions import MlflowException

from imgrec.errors import ConfigError, ImgrecError
from imgrec.jobs import Job, Verb
from imgrec.report import Column, Report, Section, Table, text_column, write_atomically
from imgrec.tracking.query import experiment_ids, find_runs, leaderboard, varying_params
from imgrec.tracking.store import open_store

OUTPUTS = (".md", ".csv", ".tex")


def check(job: Job) -> None:
    cfg = job.cfg
    if cfg.direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction must be maximize or minimize, got {cfg.direction!r}")
    if cfg.output is not None and Path(cfg.output).suffix not in OUTPUTS:
        raise ConfigError(f"output must end in {', '.join(OUTPUTS)}, got {cfg.output}")


def run(job: Job) -> Report:
    cfg = job.cfg
    client = open_store(cfg.logger.tracking_uri)
    names = [] if cfg.experiment is None else [str(cfg.experiment)] if isinstance(cfg.experiment, str) else \
        list(cfg.experiment)
    try:
        ids = experiment_ids(client, names)
        runs = find_runs(client, ids, status="FINISHED", filter_string=cfg.filter)
    except LookupError as err:
        raise ConfigError(str(err)) from None
    except MlflowException as err:
        raise ConfigError(f"filter {cfg.filter!r}: {err.message.splitlines()[0]}") from None
    entries = leaderboard(runs, cfg.metric, higher_is_better=cfg.direction == "maximize")
    if not entries:
        raise ImgrecError(f"no finished run with metric '{cfg.metric}' in {cfg.logger.tracking_uri}"
                          + (f" matching {cfg.filter!r}" if cfg.filter else ""))
    params = list(cfg.params) if cfg.params else varying_params(entries)
    rows = [{"rank": rank, "run": e.name, **{p: e.params.get(p, "") for p in params},
             f"{cfg.metric} mean": e.summary.mean,
             f"{cfg.metric} std": e.summary.std, "n": e.summary.n, "seeds": " ".join(e.seeds),
             "run_ids": " ".join(e.run_ids)} for rank, e in enumerate(entries, 1)]
    summaries = {e.run_ids[0]: e.summary for e in entries}
    columns = [Column("#", "rank"), text_column("run", "run"), *(text_column(p, p) for p in params),
               Column(f"{cfg.metric} (mean ± std)", lambda row: summaries[row["run_ids"].split()[0]].format()),
               Column("seeds", "n"), text_column("first run", lambda row: row["run_ids"][:8])]
    report = Report(f"Leaderboard by {cfg.metric}", [Section(
        text=f"{len(entries)} recipes from {sum(e.summary.n for e in entries)} finished runs "
             f"({cfg.direction}; seeds of a recipe aggregated).", table=Table("leaderboard", columns, rows))],
        name="leaderboard")
    if cfg.output:
        output = Path(cfg.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        text = {".md": report.markdown, ".csv": report.tables[0].csv, ".tex": report.latex}[output.suffix]()
        write_atomically(output, text)
        print(f"{len(entries)} recipes -> {output}")
    return report


VERB = Verb("compare", __doc__, run, check=check, plain_keys=("experiment",),
            choices={"direction": ("maximize", "minimize")})
