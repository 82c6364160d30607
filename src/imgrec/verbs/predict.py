"""`imgrec predict model=<uri> inputs=<file|folder|glob> [output=preds.csv|preds.json] [topk=3] [precision=auto]`: classify
image files.

Reads the images (imgrec.deploy.images: PNG, JPEG, BMP, GIF, TIFF, WebP and NPY of any size and mode, decoded by
the model's own preprocessing: its channels, size and centre crop), predicts them in batches and reports, per file, `pred` (the top-1 class name), `prob`, then
`pred_2`, `prob_2`, ... up to top-k: outputs/predict/<run id>/predictions.csv (and `output`, CSV or JSON by its
extension, when given) and a `predict` child run of the model's run. A file that is not an image is one line
naming it; the others are still predicted, and the command exits 1 at the end. `precision=auto` runs a batch
in bf16 autocast only from the batch size where bf16 measured faster than fp32 on this machine (imgrec.inference_precision).
"""

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import track

from imgrec.deploy.images import batches, find_inputs
from imgrec.errors import ConfigError
from imgrec.inference_precision import PRECISIONS
from imgrec.jobs import ModelJob, Verb
from imgrec.report import Column, Report, Section, Table, text_column, write_atomically


def predict(model, paths: Sequence[Path], topk: int, batch_size: int) -> tuple[list[dict], list[str]]:
    """(one row per readable file, one line per unreadable one)."""
    rows, errors = [], []
    names, k = model.class_names, min(topk, model.spec.num_classes)
    progress = track(batches(paths, model.preprocess, batch_size), total=-(-len(paths) // batch_size),
                     description="predicting",
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


def check(job: ModelJob) -> None:
    cfg = job.cfg
    if not isinstance(cfg.topk, int) or cfg.topk < 1:
        raise ConfigError(f"topk must be a positive integer, got {cfg.topk!r}")
    if cfg.output is not None and Path(cfg.output).suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"output must end in .csv or .json, got {cfg.output}")
    find_inputs(cfg.inputs)  # no such file: one line, before any run


def run(job: ModelJob) -> Report:
    cfg = job.cfg
    rows, errors = predict(job.model, find_inputs(cfg.inputs), cfg.topk, cfg.batch_size)
    table = Table("predictions", [text_column("file", "file"), *(
        Column(key, key, ".4f") if key.startswith("prob") else text_column(key, key)
        for key in (rows[0] if rows else {"pred": 0, "prob": 0}) if key != "file")], rows)
    if cfg.output:
        output = Path(cfg.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(output, json.dumps(rows, indent=1) + "\n" if output.suffix.lower() == ".json" else table.csv())
    job.child.log(params={"images": len(rows)})
    return Report(f"{len(rows)} predictions of {cfg.model}", [Section(table=table)], failures=errors,
                  attachments=[Path(cfg.output)] if cfg.output else [])


VERB = Verb("predict", __doc__, run, check=check, takes_model=True, choices={"precision": PRECISIONS})
