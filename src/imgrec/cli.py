"""`imgrec VERB key=value ...`: the one command line. Each verb is a module of imgrec.verbs with its spec
(an imgrec.jobs.Verb named VERB, train's being Hydra's own main); `imgrec --help` lists them."""

import difflib
import importlib
import sys
from collections.abc import Sequence

from imgrec import console

# verb -> one line; grouped as `imgrec --help` shows them. The module imgrec.verbs.<verb> does the work.
STUDY = {
    "train": "train one model on one dataset; prints its MLflow run id (python train.py is the same)",
    "sweep": "an Optuna sweep that answers a hyperparameter question (sweep=NAME)",
    "reproduce": "a published table: our runs beside the paper's numbers (table=NAME)",
    "cv": "k-fold cross-validation of a training config (folds=K)",
    "compare": "is A better than B: groups of runs with intervals, tests, verdicts",
    "bench": "training speed: images/s of the model families, or the pipeline against a plain loop",
    "tune": "Lightning's learning-rate (and batch-size) finder on a training config; optimizer.lr=auto uses it",
    "sync": "send what runs logged while their tracking server was unreachable (their spools)",
    "shard": "a dataset as WebDataset shards on a folder or a bucket, for data=stream (out=DIR|s3://...)",
}
MODEL = {
    "evaluate": "its test metrics on its own or another dataset's test split",
    "fewshot": "how well its features recognise unseen classes from a few examples (n-way k-shot)",
    "predict": "classify image files (PNG, JPEG, BMP, NPY) into CSV or JSON",
    "export": "ONNX, torch.export or int8 ONNX, checked against it; or register it in MLflow",
    "serve": "an HTTP endpoint for it (MLflow's model server)",
    "explain": "attributions of its decisions, their faithfulness and a sanity check",
    "attack": "its robust accuracy under L-infinity attacks (FGSM, PGD, AutoAttack)",
    "corrupt": "its accuracy under noise, blur, weather, digital and geometric corruptions (CIFAR-10-C's)",
    "compress": "a smaller copy of it, in fewer FLOPs: structured pruning and fine-tuning, before and after",
    "bench_inference": "latency, throughput, memory and accuracy of each way to run it",
}
VERBS = {**STUDY, **MODEL}

USAGE = """usage: imgrec VERB [key=value ...]        imgrec VERB --help: what VERB does, its options and defaults

An experiment-tracked pipeline for image recognition. Every verb tracks its work in MLflow (logger.tracking_uri:
MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db; `make ui` opens it) and writes its files under outputs/.
Options are Hydra overrides (key=value), as in `imgrec train model=cnn data=cifar10`.

Train and study:
{study}

Use a trained model (model=path/to.ckpt | runs:/<run_id> | models:/<name>@<alias> | models:/<name>/<version>):
{model}
"""


def usage() -> str:
    def rows(verbs: dict[str, str]) -> str:
        return "\n".join(f"  {name:<17}{summary}" for name, summary in verbs.items())

    return USAGE.format(study=rows(STUDY), model=rows(MODEL))


def main(argv: Sequence[str] | None = None) -> None:
    """The `imgrec` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        close = difflib.get_close_matches(verb, list(VERBS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SystemExit(f"error: no verb {verb!r}{hint}; the verbs are {', '.join(VERBS)} (imgrec --help)")
    console.set_command(["imgrec", verb, *rest])
    run(verb, rest)
    console.exit_now()  # done: skip the interpreter's teardown of torch, Lightning and MLflow (a second)


def run(verb: str, argv: Sequence[str]):
    """Run one verb with its arguments, in this process (`imgrec VERB ...`, the scripts/ aliases, tests); its
    report (imgrec.report.Report; None for train)."""
    module = importlib.import_module(f"imgrec.verbs.{verb}")
    if verb == "train":
        return module.main(argv)  # Hydra's own main: multirun, --cfg, tab completion
    from imgrec.jobs import run_verb

    return run_verb(module.VERB, argv)
