"""Test-time reports for classifiers: a confusion matrix PNG and a per-class metrics CSV."""

import csv
from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")  # headless: render to files only
import matplotlib.pyplot as plt  # noqa: E402
from torchmetrics.utilities.plot import plot_confusion_matrix  # noqa: E402

from imgrec.tracking.run import log_artifact  # noqa: E402

MAX_ANNOTATED_CLASSES = 20  # beyond this, numbers in the cells are unreadable


def write_per_class_csv(report: dict, path: Path) -> None:
    support = report["confusion"].sum(dim=1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for i, name in enumerate(report["class_names"]):
            per_class = report["per_class"]
            writer.writerow(
                [name, *(f"{per_class[m][i].item():.4f}" for m in ("precision", "recall", "f1")), int(support[i])]
            )


def plot_confusion(report: dict, path: Path) -> None:
    confusion, names = report["confusion"], [str(n) for n in report["class_names"]]
    side = max(6, 0.45 * len(names))
    fig, ax = plt.subplots(figsize=(side, side))
    plot_confusion_matrix(confusion, ax=ax, labels=names, add_text=len(names) <= MAX_ANNOTATED_CLASSES)
    accuracy = confusion.diag().sum().item() / max(confusion.sum().item(), 1)
    ax.set_title(f"Test confusion matrix (accuracy {accuracy:.4f})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class ClassificationReport(L.Callback):
    """After testing, writes both files to the run directory and logs them to MLflow."""

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        report = getattr(pl_module, "test_report", None)
        if report is None or not trainer.is_global_zero:
            return
        out_dir = Path(trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, write in (("confusion_matrix.png", plot_confusion), ("per_class_metrics.csv", write_per_class_csv)):
            write(report, out_dir / name)
            log_artifact(trainer.logger, out_dir / name)
