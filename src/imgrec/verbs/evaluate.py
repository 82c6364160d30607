"""`imgrec evaluate model=<uri> [data=<name>] [data.root=...] [data.classes=[...]]`: the test metrics of the
classification task (accuracy; macro precision, recall and F1), its confusion matrix and per-class table for a
trained classifier, on its own test split or on the test split of any dataset that fits it. Writes
outputs/evaluate/<run id>/<data>/ and an `evaluate-<data>` child run of the model's run.

Without data=, the model's own dataset (its classes, in its order; found where its run found it). Another dataset
must fit the model: the same image shape, and the same classes in the same order, or `data.classes` listing which
of the dataset's classes are the model's classes 0..k-1 (e.g. a model trained with data.classes=[0,1,2] evaluated
on those three classes of another dataset). Otherwise one line says why.
"""

from collections.abc import Sequence

import torch

from imgrec.data import catalog
from imgrec.data.splits import select_classes
from imgrec.errors import ConfigError
from imgrec.jobs import ModelJob, Verb
from imgrec.report import Column, Report, Section, Table, text_column
from imgrec.tasks.classification import per_class_metrics, summary_metrics
from imgrec.tracking import predictions
from imgrec.tracking.reports import confusion_figure, per_class_table, write_predictions


def fitting_classes(model, data) -> tuple[list[int] | None, tuple[str, ...]]:
    """(data.classes, the class names) of another dataset that fits the model; ConfigError when its shape or its
    classes do not fit."""
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
    return classes, model_names or names


def fitting_test_split(model, data) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Another dataset's test split as [0, 1] images and labels in the model's class order, and the class names."""
    classes, names = fitting_classes(model, data)
    files = catalog.load_dataset(data.name, data.get("root"), bool(data.get("download", True)))
    images, labels = select_classes(torch.from_numpy(files.test_images), torch.from_numpy(files.test_labels), classes,
                                    catalog.get_spec(data.name).num_classes)
    return images.float() / 255, labels, names


def evaluate(model, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
             batch_size: int) -> tuple[dict[str, float], dict]:
    """(test metrics as the classification task logs them, its report: confusion matrix and per-class metrics)."""
    num_classes = len(class_names)
    summary, per_class = summary_metrics(num_classes), per_class_metrics(num_classes)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    kept = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            top_prob, preds = model(images[start : start + batch_size]).softmax(dim=1).max(dim=1)
            target = labels[start : start + batch_size]
            summary.update(preds, target)
            per_class.update(preds, target)
            confusion += torch.bincount(target * num_classes + preds, minlength=num_classes**2).view(num_classes, -1)
            kept.append((preds, target, top_prob))
    metrics = {f"test/{name}": float(value) for name, value in summary.compute().items()}
    pred, label, prob = (torch.cat(column) for column in zip(*kept)) if kept else (torch.zeros(0),) * 3
    report = {"confusion": confusion, "per_class": per_class.compute(), "class_names": tuple(class_names),
              "predictions": {"pred": pred, "label": label, "prob": prob}}
    return metrics, report


def another_dataset(job: ModelJob) -> bool:
    return job.dataset != job.model.spec.data or job.cfg.data.get("classes") is not None


def check(job: ModelJob) -> None:
    if another_dataset(job):
        fitting_classes(job.model, job.cfg.data)


def run(job: ModelJob) -> Report:
    cfg, model = job.cfg, job.model
    name = job.dataset
    if another_dataset(job):
        images, labels, names = fitting_test_split(model, cfg.data)
    else:  # its own test split, its classes
        images, labels = job.test_split()
        names = model.class_names
    metrics, test_report = evaluate(model, images, labels, names, cfg.batch_size)
    job.out_dir = job.out_dir / name
    job.out_dir.mkdir(parents=True, exist_ok=True)
    kept = write_predictions(test_report, job.out_dir / predictions.FILE)
    job.child.log(params={"data": name, "images": len(labels), "trained_on": model.spec.data})
    summary = Table("metrics", [text_column("metric", "metric"), Column("value", "value", ".4f")],
                    [{"metric": k, "value": v} for k, v in metrics.items()])
    return Report(f"{cfg.model} on the {name} test split",
                  [Section(text=f"{len(labels)} test images of {name}; the model was trained on {model.spec.data}.",
                           table=summary),
                   Section("Per class", table=per_class_table(test_report))],
                  figures=[confusion_figure(test_report)], metrics=metrics, attachments=[kept])


VERB = Verb("evaluate", __doc__, run, check=check, takes_model=True,
            run_name=lambda job: f"evaluate-{job.dataset}")
