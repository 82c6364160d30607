"""A leaderboard of MLflow runs, seeds aggregated per recipe: `python scripts/compare.py [options]`.

    python scripts/compare.py                                        # every experiment, test/acc
    python scripts/compare.py -e imgrec -f "params.data.name = 'fashion_mnist'" --metric val/acc_best
    python scripts/compare.py -e tables --format csv -o leaderboard.csv

Rows are recipes (the resolved config without its seed, tag imgrec.recipe_hash); the metric is the
mean ± standard deviation over the recipe's finished runs; columns show the params that differ.
"""

import argparse
import csv
import io
from collections.abc import Sequence

from mlflow.exceptions import MlflowException

from imgrec import drivers
from imgrec.config import default_tracking_uri
from imgrec.errors import ConfigError, ImgrecError
from imgrec.tracking.query import Entry, experiment_ids, leaderboard, search_all, varying_params
from imgrec.tracking.store import open_store


def markdown(entries: Sequence[Entry], metric: str, columns: Sequence[str]) -> str:
    header = ["#", "run", *columns, f"{metric} (mean ± std)", "seeds", "first run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, e in enumerate(entries, 1):
        cells = [str(rank), e.name, *(e.params.get(c, "") for c in columns), e.summary.format(),
                 str(e.summary.n), e.run_ids[0][:8]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(entries: Sequence[Entry], metric: str, columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rank", "run", *columns, f"{metric} mean", f"{metric} std", "n", "seeds", "run_ids"])
    for rank, e in enumerate(entries, 1):
        writer.writerow([rank, e.name, *(e.params.get(c, "") for c in columns), e.summary.mean,
                         "" if e.summary.std is None else e.summary.std, e.summary.n, " ".join(e.seeds),
                         " ".join(e.run_ids)])
    return out.getvalue()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="compare.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-e", "--experiment", action="append", default=[],
                        help="MLflow experiment name (repeatable; default: all)")
    parser.add_argument("-f", "--filter", default="", help="an MLflow search filter, as in the UI's search box")
    parser.add_argument("-m", "--metric", default="test/acc", help="the metric to rank by (default: test/acc)")
    parser.add_argument("--minimize", action="store_true", help="lower is better (losses, errors)")
    parser.add_argument("--params", default=None,
                        help="comma-separated param columns (default: those that differ between recipes)")
    parser.add_argument("--format", choices=("md", "csv"), default="md")
    parser.add_argument("-o", "--output", default=None, help="write here instead of stdout")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: train.py's (MLFLOW_TRACKING_URI, else mlruns/mlflow.db under IMGREC_ROOT or .)")
    return parser.parse_args(argv)


def run(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    tracking_uri = args.tracking_uri or default_tracking_uri()
    client = open_store(tracking_uri)
    only_finished = "attributes.status = 'FINISHED'"
    try:
        ids = experiment_ids(client, args.experiment)
        runs = search_all(client, ids, f"{only_finished} and {args.filter}" if args.filter else only_finished)
    except LookupError as err:
        raise ConfigError(str(err)) from None
    except MlflowException as err:
        raise ConfigError(f"--filter {args.filter!r}: {err.message.splitlines()[0]}") from None
    entries = leaderboard(runs, args.metric, higher_is_better=not args.minimize)
    if not entries:
        raise ImgrecError(f"no finished run with metric '{args.metric}' in {tracking_uri}"
                          + (f" matching {args.filter!r}" if args.filter else ""))
    columns = args.params.split(",") if args.params else varying_params(entries)
    text = markdown(entries, args.metric, columns) if args.format == "md" else csv_text(entries, args.metric, columns)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + ("\n" if args.format == "md" else ""))
        print(f"{len(entries)} recipes from {sum(e.summary.n for e in entries)} runs -> {args.output}")
    else:
        print(text)


def main(argv: Sequence[str] | None = None) -> None:
    drivers.main(run, argv)  # argparse answers -h itself
