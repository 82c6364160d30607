"""`python scripts/predict.py model=<uri> inputs=<file|folder|glob> [output=...] [topk=3]`.

Reads the images (imgrec.deploy.images: the model's channels and size, [0, 1] values), predicts them in
batches, prints a table and writes CSV (or JSON, by the output's extension) with the columns `file`, `pred`
(top-1 class name), `prob`, then `pred_2`, `prob_2`, ... up to top-k. A file that is not an image is one
line naming it; the others are still predicted, and the command exits 1 at the end. The file is logged to
MLflow as a `predict` child run of the model's run.
"""

import csv
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from imgrec import drivers
from imgrec.deploy.images import batches, find_inputs
from imgrec.errors import ConfigError

log = logging.getLogger(__name__)


def predict(model, paths: Sequence[Path], topk: int, batch_size: int) -> tuple[list[dict], list[str]]:
    """(one row per readable file, one line per unreadable one)."""
    rows, errors = [], []
    names, k = model.class_names, min(topk, model.spec.num_classes)
    progress = track(list(batches(paths, model.spec.in_shape, batch_size)), description="predicting",
                     disable=not sys.stderr.isatty(), console=Console(stderr=True))
    with torch.no_grad():
        for files, images, unreadable in progress:
            errors += unreadable
            if not files:
                continue
            probs, classes = model(images).float().softmax(dim=1).topk(k, dim=1)
            for file, p, c in zip(files, probs.tolist(), classes.tolist()):
                row = {"file": str(file)}
                for rank in range(k):
                    suffix = "" if rank == 0 else f"_{rank + 1}"
                    row[f"pred{suffix}"], row[f"prob{suffix}"] = names[c[rank]], round(p[rank], 6)
                rows.append(row)
    return rows, errors


def write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(rows, indent=1) + "\n")
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["file", "pred", "prob"])
        writer.writeheader()
        writer.writerows(rows)


def show(rows: list[dict], limit: int = 30) -> None:
    table = Table(title=f"{len(rows)} images" + (f" (the first {limit})" if len(rows) > limit else ""))
    for column in rows[0] if rows else ():
        table.add_column(column, justify="right" if column.startswith("prob") else "left")
    for row in rows[:limit]:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)


def run(argv: Sequence[str]) -> None:
    cfg = drivers.compose("predict", argv, plain_keys=("model",))
    if not isinstance(cfg.topk, int) or cfg.topk < 1:
        raise ConfigError(f"topk must be a positive integer, got {cfg.topk!r}")
    if cfg.output is not None and Path(cfg.output).suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"output must end in .csv or .json, got {cfg.output}")
    job = drivers.ModelJob.open(cfg, "predict")
    paths = find_inputs(cfg.inputs)
    rows, errors = predict(job.model, paths, cfg.topk, cfg.batch_size)
    output = Path(cfg.output) if cfg.output else job.out_dir / "predictions.csv"
    write(rows, output)
    show(rows)
    run_ = job.child_run("predict", {"model": cfg.model, "inputs": cfg.inputs, "topk": cfg.topk, "images": len(rows)})
    with run_.running():
        run_.log(files=[output])
    print(f"{len(rows)} predictions -> {output} (MLflow run {run_.run_id})")
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if errors:
        raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> None:
    drivers.main(run, argv, usage=__doc__.split("\n\n")[0], required="model")
