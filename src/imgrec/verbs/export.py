"""`imgrec export model=<uri> [format=onnx|pt2|int8] [output=...] [check=true]`, or `... register=NAME
[alias=champion]`: a trained model as a file that runs without imgrec, or as a registered MLflow model.

Every format takes float [0, 1] images (N, C, H, W) with a dynamic batch dimension and returns logits
(imgrec.deploy.export: ONNX through torch.onnx's dynamo exporter, torch.export's pt2, int8 ONNX by ONNX Runtime's
static quantization calibrated on `calibration_images` training images). With check=true (the default) the file
is run on the model's real test images beside the eager model: the largest logit difference, top-1 agreement and
test accuracy. Writes outputs/export/<run id>/ (the file, unless `output` says where; report.md) and an
`export-<format>` child run of the model's run.

register=NAME logs the model as an MLflow pyfunc (imgrec.deploy.pyfunc) in a `register` child run, registers it
as NAME and points `alias` at the new version: `models:/NAME@champion` then works in `imgrec serve` and as
model=<uri> everywhere. Registering needs neither the dataset nor a check: the registered model is the checkpoint.
"""

import time
from pathlib import Path

from imgrec.deploy.export import (
    FORMATS,
    agreement,
    eager,
    example_batch,
    export_int8,
    export_onnx,
    export_pt2,
    logits_of,
    runner,
)
from imgrec.errors import ConfigError
from imgrec.jobs import ModelJob, Verb
from imgrec.report import Column, Report, Section, Table, text_column


def export(job: ModelJob, kind: str, output: Path) -> dict[str, float]:
    cfg, model = job.cfg, job.model
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if kind == "onnx":
        export_onnx(model, output)
    elif kind == "pt2":
        export_pt2(model, output)
    else:
        export_int8(model, output, job.train_images(cfg.calibration_images))
    result = {"export_s": time.perf_counter() - start, "file_mb": output.stat().st_size / 2**20}
    if cfg.check:
        images, labels = (t.numpy() for t in job.test_split())
        reference = logits_of(eager(model), images)
        result |= agreement(reference, logits_of(runner(kind, output, cfg.threads), images), labels)
        result |= {"eager_test_acc": agreement(reference, reference, labels)["test_acc"], "test_images": len(labels)}
    return result


def register(job: ModelJob, name: str, alias: str | None) -> str:
    """Log the job's model as a pyfunc in its child run, register it as `name`, point `alias` at it; returns
    `models:/<name>@<alias>` (or `/<version>`)."""
    import mlflow
    from mlflow import MlflowClient

    from imgrec.deploy.pyfunc import ImageClassifier, requirements, signature
    from imgrec.hub import resolve_checkpoint

    cfg, model = job.cfg, job.model
    checkpoint = resolve_checkpoint(str(cfg.model), cfg.logger.tracking_uri)
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    mlflow.set_registry_uri(cfg.logger.tracking_uri)
    with mlflow.start_run(run_id=job.child.run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ImageClassifier(), artifacts={"checkpoint": str(checkpoint)},
            signature=signature(model), input_example=example_batch(model.spec.in_shape).numpy(),  # a batch of 2:
            pip_requirements=requirements(), registered_model_name=name)  # the batch size stays free
    version = info.registered_model_version
    if alias:  # in this store's registry (a client's default registry is whichever the process set last)
        MlflowClient(cfg.logger.tracking_uri, registry_uri=cfg.logger.tracking_uri).set_registered_model_alias(
            name, alias, version)
    return f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"


def check(job: ModelJob) -> None:
    if job.cfg.register is None and job.cfg.format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {job.cfg.format!r}")


def run(job: ModelJob) -> Report:
    cfg = job.cfg
    if cfg.register is not None:
        uri = register(job, str(cfg.register), cfg.alias)
        return Report(f"{cfg.model} registered as {uri}",
                      [Section(text=f"Serve it with `imgrec serve model={uri}`; use it anywhere as model={uri}.")],
                      metrics={})
    output = Path(cfg.output) if cfg.output else job.out_dir / f"model{FORMATS[cfg.format]}"
    result = export(job, cfg.format, output)
    rows = [{"check": key, "value": value} for key, value in result.items()]
    columns = [text_column("check", "check"), Column("value", "value", ".6g")]
    what = "checked on the model's test images" if cfg.check else "not checked (check=false)"
    return Report(f"{cfg.format} export of {cfg.model}",
                  [Section(text=f"`{output}`, {what}.", table=Table("export", columns, rows))],
                  metrics=result, attachments=[output])


def run_name(job: ModelJob) -> str:
    return "register" if job.cfg.register is not None else f"export-{job.cfg.format}"


VERB = Verb("export", __doc__, run, check=check, takes_model=True, run_name=run_name, choices={"format": list(FORMATS)})
