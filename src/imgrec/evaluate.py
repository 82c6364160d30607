"""`python scripts/evaluate.py model=<uri> data=<name> [data.root=...] [data.classes=[...]]`: the test metrics of
the classification task (accuracy, macro precision / recall / F1), its confusion matrix and per-class CSV for a
trained classifier on the test split of any dataset, logged to an `evaluate-<data>` child run of the model's run
and written to outputs/evaluate/<run id>/<data>/.

The dataset must fit the model: the same image shape, and the same classes in the same order, or
`data.classes` listing which of the dataset's classes are the model's classes 0..k-1 (e.g. a model trained
with data.classes=[0,1,2] evaluated on those three classes of another dataset). Otherwise one line says why.
"""

import json
from collections.abc import Sequence

import torch

from imgrec import drivers
from imgrec.data import catalog
from imgrec.data.splits import select_classes
from imgrec.errors import ConfigError
from imgrec.tasks.classification import per_class_metrics, summary_metrics
from imgrec.tracking.reports import plot_confusion, write_per_class_csv


def fitting_test_split(model, data) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """The dataset's test split as [0, 1] images and labels in the model's class order, and the class names;
    ConfigError when the shape or the classes do not fit."""
    spec, model_spec = catalog.get_spec(data.name), model.spec
    if tuple(spec.in_shape) != tuple(model_spec.in_shape):
        raise ConfigError(f"data={data.name} has {'x'.join(map(str, spec.in_shape))} images; the model takes "
                          f"{'x'.join(map(str, model_spec.in_shape))} (it was trained on {model_spec.data})")
    classes = None if data.get("classes") is None else [int(c) for c in data.classes]
    if classes is not None and (len(set(classes)) != len(classes) or not all(0 <= c < len(spec.class_names)
                                                                             for c in classes)):
        raise ConfigError(f"data.classes must be distinct class indices of {data.name} in 0..{len(spec.class_names) - 1}")
    names = spec.class_names if classes is None else tuple(spec.class_names[c] for c in classes)
    if len(names) != model_spec.num_classes:
        raise ConfigError(f"data={data.name} has {len(names)} classes{' (data.classes)' if classes else ''}; the "
                          f"model has {model_spec.num_classes}: pass data.classes=[...] with the dataset's indices of "
                          "the model's classes, in its order")
    model_names = tuple(model_spec.class_names or ())
    if classes is None and model_names and names != model_names:
        raise ConfigError(f"data={data.name}'s classes {list(names)[:4]}... are not the model's {list(model_names)[:4]}...: "
                          "pass data.classes=[...] to say which of the dataset's classes are the model's 0..k-1")
    files = catalog.load_dataset(data.name, data.get("root"), bool(data.get("download", True)))
    images, labels = select_classes(torch.from_numpy(files.test_images), torch.from_numpy(files.test_labels), classes,
                                    len(spec.class_names))
    return images.float() / 255, labels, model_names or names


def evaluate(model, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
             batch_size: int) -> tuple[dict[str, float], dict]:
    """(test metrics as the classification task logs them, its report: confusion matrix and per-class metrics)."""
    num_classes = len(class_names)
    summary, per_class = summary_metrics(num_classes), per_class_metrics(num_classes)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            preds = model(images[start : start + batch_size]).argmax(dim=1)
            target = labels[start : start + batch_size]
            summary.update(preds, target)
            per_class.update(preds, target)
            confusion += torch.bincount(target * num_classes + preds, minlength=num_classes**2).view(num_classes, -1)
    metrics = {f"test/{name}": float(value) for name, value in summary.compute().items()}
    report = {"confusion": confusion, "per_class": per_class.compute(), "class_names": tuple(class_names)}
    return metrics, report


def run(argv: Sequence[str]) -> None:
    cfg = drivers.compose("evaluate", argv, plain_keys=("model",))
    if cfg.get("data") is None:
        raise ConfigError("data=<name> is required: the dataset to evaluate on (conf/data)")
    job = drivers.ModelJob.open(cfg, "evaluate")
    images, labels, names = fitting_test_split(job.model, cfg.data)
    metrics, report = evaluate(job.model, images, labels, names, cfg.batch_size)
    classes = None if cfg.data.get("classes") is None else [int(c) for c in cfg.data.classes]
    out = job.out_dir / cfg.data.name
    out.mkdir(parents=True, exist_ok=True)
    write_per_class_csv(report, out / "per_class_metrics.csv")
    plot_confusion(report, out / "confusion_matrix.png")
    (out / "metrics.json").write_text(json.dumps({"model": str(cfg.model), "data": cfg.data.name, "images": len(labels),
                                                  "classes": classes, **metrics}, indent=2) + "\n")
    params = {"model": cfg.model, "data": cfg.data.name, "data.classes": classes, "images": len(labels),
              "trained_on": job.model.spec.data}
    tracked = job.child_run(f"evaluate-{cfg.data.name}", params)
    with tracked.running():
        tracked.log(metrics, [out / name for name in ("metrics.json", "per_class_metrics.csv", "confusion_matrix.png")])
    print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + f"  ({len(labels)} test images of {cfg.data.name})")
    print(f"{out} (MLflow run {tracked.run_id})")


def main(argv: Sequence[str] | None = None) -> None:
    drivers.main(run, argv, usage=__doc__.split("\n\n")[0], required="model")
