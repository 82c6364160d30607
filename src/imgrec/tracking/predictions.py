"""A classification run's per-example test predictions: what two runs' McNemar test and confusion matrices need.

Kept with the run as `test_predictions.npz` (compressed numpy arrays, in test-set order): `pred` (the predicted
class) and `label` (the true one) as int16, `prob` (the top softmax probability) as float16; 25 KB for
Fashion-MNIST's 10,000 test images.
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

FILE = "test_predictions.npz"


@dataclass(frozen=True)
class Predictions:
    pred: np.ndarray
    label: np.ndarray
    prob: np.ndarray | None = None

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.label

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.label) else float("nan")

    def confusion(self, num_classes: int) -> np.ndarray:
        """Counts: rows the true class, columns the predicted one."""
        return np.bincount(self.label.astype(np.int64) * num_classes + self.pred, minlength=num_classes ** 2
                           ).reshape(num_classes, num_classes)


def save(path: Path, pred, label, prob=None) -> Path:
    arrays = {"pred": np.asarray(pred, dtype=np.int16), "label": np.asarray(label, dtype=np.int16)}
    if prob is not None:
        arrays["prob"] = np.asarray(prob, dtype=np.float16)
    with path.open("wb") as out:  # a file object: np.savez would append .npz to a name without it
        np.savez_compressed(out, **arrays)
    return path


def load(path: Path) -> Predictions:
    with np.load(path) as data:
        prob = data["prob"].astype(np.float32) if "prob" in data.files else None
        return Predictions(data["pred"].astype(np.int64), data["label"].astype(np.int64), prob)


def of_run(client: MlflowClient, run_id: str) -> Predictions | None:
    """The run's predictions, or None when it has none (trained before they were kept, or not a classifier)."""
    if not any(f.path == FILE for f in client.list_artifacts(run_id)):
        return None
    with tempfile.TemporaryDirectory() as folder:
        try:
            return load(Path(client.download_artifacts(run_id, FILE, folder)))
        except (MlflowException, OSError, ValueError):
            return None
