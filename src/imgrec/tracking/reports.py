"""Test-time reports for classifiers: a confusion matrix PNG, a per-class metrics CSV and the per-example
predictions (imgrec.tracking.predictions), for a training run (the ClassificationReport callback) and for
`imgrec evaluate` alike.

`report` below is what imgrec.tasks.classification.ClassificationTask leaves in `test_report`: the confusion
matrix, per-class precision / recall / F1 and the class names.
"""

from pathlib import Path

import lightning as L

from imgrec.report import Column, Figure, Table, figure, save_figure, text_column, write_atomically
from imgrec.tracking import predictions

MAX_ANNOTATED_CLASSES = 20  # beyond this, numbers in the cells are unreadable


def per_class_table(report: dict) -> Table:
    support = report["confusion"].sum(dim=1)
    per_class = report["per_class"]
    rows = [{"class": str(name), **{m: float(per_class[m][i]) for m in ("precision", "recall", "f1")},
             "support": int(support[i])} for i, name in enumerate(report["class_names"])]
    columns = [text_column("class", "class"), *(Column(m, m, ".4f") for m in ("precision", "recall", "f1")),
               Column("support", "support")]
    return Table("per_class_metrics", columns, rows, caption="Per-class test metrics")


def confusion_figure(report: dict) -> Figure:
    def draw():
        from torchmetrics.utilities.plot import plot_confusion_matrix

        confusion, names = report["confusion"], [str(n) for n in report["class_names"]]
        side = max(6, 0.45 * len(names))
        fig, ax = figure(side, side)
        plot_confusion_matrix(confusion, ax=ax, labels=names, add_text=len(names) <= MAX_ANNOTATED_CLASSES)
        accuracy = confusion.diag().sum().item() / max(confusion.sum().item(), 1)
        ax.set_title(f"Test confusion matrix (accuracy {accuracy:.4f})")
        return fig

    return Figure("confusion_matrix.png", draw)


class ClassificationReport(L.Callback):
    """After testing, writes the files to the run directory and hands them to the logger (the MLflow run)."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        report = getattr(pl_module, "test_report", None)
        if report is None or not trainer.is_global_zero:
            return
        out_dir = Path(trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        table, picture = per_class_table(report), confusion_figure(report)
        files = [write_atomically(out_dir / f"{table.name}.csv", table.csv())]
        if "predictions" in report:
            files.append(write_predictions(report, out_dir / predictions.FILE))
        if save_figure(picture, out_dir / picture.name):
            files.append(out_dir / picture.name)
        log_file = getattr(trainer.logger, "log_file", None)  # imgrec.tracking.logger.RunLogger
        for path in files if log_file else ():
            log_file(path)


def write_predictions(report: dict, path: Path) -> Path:
    kept = report["predictions"]
    return predictions.save(path, kept["pred"].numpy(), kept["label"].numpy(), kept["prob"].numpy())
