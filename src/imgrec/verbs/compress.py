"""`imgrec compress model=<uri> prune=0.5 [round_to=16] [finetune_epochs=3] [finetune=[overrides...]] [data.root=...]`:
a smaller copy of a trained classifier, structurally pruned and fine-tuned.

Removes `prune` of the channels of every group of coupled layers of the model's network (imgrec.models.pruned:
Torch-Pruning, lowest L2 norm first; `round_to` keeps a multiple of that many channels per layer: fewer FLOPs are
faster only where the kernels get the channel blocks they vectorize over, 16 for ONNX Runtime on AVX-512), then fine-tunes it for `finetune_epochs` on the model's own data (its classes,
its folder) as a new training run (model=pruned; `finetune` adds training overrides, optimizer=sgd say), which is
loadable through imgrec.hub like any other: its checkpoint records the pruned shapes. A finished run of the same
compression is reused. Reports, before and after: parameters, MFLOPs per image, batch-1 latency under ONNX Runtime
and in eager PyTorch, the ONNX file's size, and test accuracy. Writes outputs/compress/<run id>/ (report.md,
results.csv) and a `compress` child run of the model's run; the last line is the new model, runs:/<run id>.
"""

import tempfile
from pathlib import Path

import torch

from imgrec import cost, hub
from imgrec.deploy.export import onnx_profile
from imgrec.errors import ConfigError
from imgrec.jobs import ModelJob, TrainJob, Verb, reuse_or_train
from imgrec.models.pruned import PRUNABLE
from imgrec.report import Column, Report, Section, Table, text_column

COLUMNS = [text_column("model", "model"), Column("params", "params", ",.0f"), Column("MFLOPs", "mflops", ".2f"),
           Column("ONNX Runtime latency (ms)", "onnx_latency_ms", ".3f"), Column("eager latency (ms)", "latency_ms", ".3f"),
           Column("ONNX MB", "onnx_mb", ".3f"), Column("test acc", "acc", ".4f")]


def check(job: ModelJob) -> None:
    cfg = job.cfg
    if not isinstance(cfg.prune, (int, float)) or not 0 < cfg.prune < 1:
        raise ConfigError(f"prune: the share of channels to remove, between 0 and 1 (exclusive), got {cfg.prune!r}")
    if cfg.round_to is not None and (not isinstance(cfg.round_to, int) or cfg.round_to < 1):
        raise ConfigError(f"round_to: a positive number of channels (or null), got {cfg.round_to!r}")
    if not isinstance(cfg.finetune_epochs, int) or cfg.finetune_epochs < 1:
        raise ConfigError(f"finetune_epochs: a positive integer (a pruned net needs training), got {cfg.finetune_epochs!r}")
    if not any(isinstance(m, PRUNABLE) for m in job.model.net.modules()):
        raise ConfigError(f"model: {cfg.model} ({job.model.spec.model.get('_target_')}) has no convolution to prune; "
                          "structured pruning removes conv channels")


def finetune_job(job: ModelJob) -> TrainJob:
    """The pruning and fine-tuning run: model=pruned on the model's own data as its run had it (its source, splits,
    classes and augmentation)."""
    from imgrec.data.trained import training_overrides

    cfg = job.cfg
    overrides = ["model=pruned", f"model.checkpoint={cfg.model}", f"model.amount={cfg.prune}",
                 *([f"model.round_to={cfg.round_to}"] if cfg.round_to else []),
                 *training_overrides(job.model.spec, job.data_root),
                 f"trainer.max_epochs={cfg.finetune_epochs}", f"paths.root={cfg.paths.root}",
                 f"logger.tracking_uri={cfg.logger.tracking_uri}", f"logger.experiment_name={cfg.logger.experiment_name}",
                 *[str(o) for o in cfg.finetune or []]]
    return TrainJob(overrides, name=f"pruned-{cfg.prune:g}", what=f"pruning {cfg.model} by {cfg.prune:g}",
                    tags={"imgrec.role": "compressed", "imgrec.compressed_from": str(cfg.model)},
                    reuse={"imgrec.compressed_from": str(cfg.model)})


def profile(model, images: torch.Tensor, labels: torch.Tensor, threads: int, calls: int) -> dict[str, float]:
    """What a model costs and how right it is: parameters, MFLOPs, eager and ONNX Runtime batch-1 latency, ONNX size,
    test accuracy (ONNX Runtime's, which agrees with eager fp32)."""
    with tempfile.TemporaryDirectory() as scratch:
        onnx = onnx_profile(model, images.numpy(), labels.numpy(), Path(scratch), threads=threads, calls=calls)
    return {"params": float(cost.parameters(model.net)), "mflops": cost.mflops(model.net, model.spec.in_shape),
            "latency_ms": cost.net_latency_ms(model.net, model.spec.in_shape, calls), "acc": onnx["onnx_acc"],
            "onnx_latency_ms": onnx["onnx_latency_ms"], "onnx_mb": onnx["onnx_mb"]}


def run(job: ModelJob) -> Report:
    cfg = job.cfg
    torch.set_num_threads(cfg.threads)
    images, labels = job.test_split()
    before = profile(job.model, images, labels, cfg.threads, cfg.latency_calls)
    trained = finetune_job(job)
    new_run = reuse_or_train(trained, job.client, Path(cfg.paths.root) / "outputs" / "compress" / "runs" / trained.token,
                             parent_id=job.source_run_id)
    uri = f"runs:/{new_run.info.run_id}"
    pruned = hub.load_model(uri, cfg.logger.tracking_uri)
    after = profile(pruned, images, labels, cfg.threads, cfg.latency_calls)
    rows = [{"model": f"{cfg.model} (original)", **before},
            {"model": f"{uri}: pruned by {cfg.prune:g}, fine-tuned {cfg.finetune_epochs} epochs", **after}]
    ratio = {k: after[k] / before[k] for k in ("params", "mflops", "onnx_latency_ms", "latency_ms", "onnx_mb")}
    change = after["acc"] - before["acc"]
    text = (f"{len(labels)} test images of {job.model.spec.data}. Pruned by {cfg.prune:g} (Torch-Pruning, L2 magnitude "
            f"per layer group) and fine-tuned {cfg.finetune_epochs} epochs: {ratio['params']:.0%} of the parameters, "
            f"{ratio['mflops']:.0%} of the MFLOPs, {ratio['onnx_latency_ms']:.0%} of the ONNX Runtime batch-1 latency "
            f"({cfg.threads} thread{'s' if cfg.threads != 1 else ''}, median of {cfg.latency_calls} calls); test "
            f"accuracy {change * 100:+.2f} pp.")
    metrics = {**{f"before/{k}": v for k, v in before.items()}, **{f"after/{k}": v for k, v in after.items()},
               "acc_change": change}
    job.child.log(tags={"imgrec.compressed_run": new_run.info.run_id})
    report = Report(f"Compressing {cfg.model}", [Section(text=text, table=Table("results", COLUMNS, rows))],
                    metrics=metrics)
    report.made = uri
    return report


VERB = Verb("compress", __doc__, run, check=check, takes_model=True,
            run_name=lambda job: f"compress-{job.cfg.prune:g}")
