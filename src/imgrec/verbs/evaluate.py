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

from imgrec.jobs import ModelJob, Verb
from imgrec.report import Column, Report, Section, Table, text_column
from imgrec.tasks.classification import per_class_metrics, summary_metrics
from imgrec.tracking import predictions
from imgrec.tracking.reports import confusion_figure, per_class_table, write_predictions


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


def check(job: ModelJob) -> None:
    job.fitting_classes()


def run(job: ModelJob) -> Report:
    cfg, model = job.cfg, job.model
    name = job.dataset
    images, labels, names = job.evaluation_split()
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
