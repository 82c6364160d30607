"""A training run's dataset as an MLflow dataset input: the UI's Dataset column and the run's Inputs.

The input names the dataset, where its files are (the folder or file they were read from), and a digest:
the SHA-256 of the files' bytes together with the split settings (validation size or fold, classes, training
subset, labels per class), so it changes when the files change, and two runs share a dataset entry only when they
trained on the same split. Its profile lists the split sizes, the image shape, the class names and the files' own
SHA-256. Every run also logs `data/labeled_images`; a run on a labeled subset (data.labels_per_class) logs which
images were labeled (labeled_images.csv: their index in the dataset's training files, and their label).
"""

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, Metric
from mlflow.exceptions import MlflowException

from imgrec.data import catalog

CHUNK = 1 << 20


class ImageDataset(MetaDataset):
    """Metadata only (the files stay where they are), with a profile."""

    def __init__(self, source: DatasetSource, name: str, digest: str, profile: dict[str, Any]):
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}  # MetaDataset leaves the profile out


def local_source(path: Path) -> DatasetSource:
    """MLflow's source for a local path (a LocalArtifactDatasetSource, which MLflow registers twice and warns of)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        return resolve_dataset_source(str(path))


def files_sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def image_dataset(datamodule) -> ImageDataset:
    """The dataset a loaded imgrec.data.datamodule.ImageDataModule trains, validates and tests on."""
    source, files = catalog.dataset_files(datamodule.spec.name, datamodule.root, download=False)
    splits = datamodule._splits
    split = {"val_size": datamodule.val_size, "split_seed": datamodule.split_seed, "folds": datamodule.folds,
             "fold": datamodule.fold if datamodule.folds else None, "classes": datamodule.classes,
             "train_size": datamodule.train_size, "labels_per_class": datamodule.labels_per_class}
    sha256 = files_sha256(files)
    digest = hashlib.sha256(json.dumps({"files": sha256, **split}, sort_keys=True).encode()).hexdigest()[:16]
    profile = {"train": len(splits.train[1]), "validation": len(splits.val[1]), "test": len(splits.test[1]),
               **({"unlabeled": len(splits.unlabeled[1])} if splits.unlabeled is not None else {}),
               "image_shape": list(datamodule.in_shape), "classes": list(datamodule.class_names),
               "files_sha256": sha256, **{k: v for k, v in split.items() if v is not None}}
    return ImageDataset(local_source(source), datamodule.spec.name, digest, profile)


def log_dataset(client, run_id: str, datamodule) -> ImageDataset | None:
    """Log the datamodule's dataset as the run's training input; None for data that is not an image dataset."""
    if getattr(datamodule, "_splits", None) is None or not hasattr(datamodule, "spec"):
        return None
    dataset = image_dataset(datamodule)
    log_labeled_images(client, run_id, datamodule._splits)
    context = InputTag(key="mlflow.data.context", value="training")
    for attempt in range(3):
        try:
            client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[context])])
            return dataset
        except MlflowException as err:
            # Runs starting together on one tracking server race to create the same dataset entry: the loser's
            # insert breaks the table's unique key; by the next try the entry exists and is reused.
            if attempt == 2 or "unique" not in str(err).lower():
                raise
            time.sleep(0.5 * (attempt + 1))
    return dataset


def log_labeled_images(client, run_id: str, splits) -> None:
    """`data/labeled_images` (the training images with labels), and with a labeled subset `data/unlabeled_images`
    and labeled_images.csv: which images were labeled (their index in the training files) and their label."""
    metrics = {"data/labeled_images": len(splits.train[1])}
    if splits.labeled_positions is not None:
        metrics["data/unlabeled_images"] = len(splits.unlabeled[1])
        rows = zip(splits.labeled_positions.tolist(), splits.train[1].tolist())
        client.log_text(run_id, "index,label\n" + "".join(f"{i},{label}\n" for i, label in rows), "labeled_images.csv")
    client.log_batch(run_id, metrics=[Metric(key, value, int(time.time() * 1000), 0) for key, value in metrics.items()])
