"""A training run's dataset as an MLflow dataset input: the UI's Dataset column and the run's Inputs.

The input names the dataset, where its files are (the folder or file they were read from, or a hub name), and a
digest: the files' own (the built-in datasets' bytes; a folder's names, sizes and times; a HuggingFace dataset's
fingerprint) together with the split settings (validation size or fold, classes, training subset, labels per
class), so it changes when the files change, and two runs share a dataset entry only when they trained on the same
split. Its profile lists the split sizes, the image shape and preprocessing, the class names, the files and those
left out. Every run also logs `data/labeled_images`, its class balance (class_balance.csv: images per class and
split) and, when some images did not decode, bad_files.txt; a run on a labeled subset (data.labels_per_class) logs
which images were labeled (labeled_images.csv: their position in the source's training images, and their label).
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


def dataset_source(uri: str) -> DatasetSource:
    """MLflow's source for a local path (a LocalArtifactDatasetSource, which MLflow registers twice and warns of), or
    for anything else (a hub name, a bucket) a source that keeps the URI as given."""
    if Path(uri).exists():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
            return resolve_dataset_source(uri)
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    return HTTPDatasetSource(uri)


def image_dataset(datamodule) -> ImageDataset:
    """The dataset a loaded imgrec.data.datamodule.ImageDataModule trains, validates and tests on."""
    source, split = datamodule.source(), datamodule.split_settings()
    digest = hashlib.sha256(json.dumps({"files": source.digest, **split}, sort_keys=True).encode()).hexdigest()[:16]
    counts = datamodule.class_counts()
    profile = {**{part: sum(values) for part, values in counts.items()}, "image_shape": list(datamodule.in_shape),
               "classes": list(datamodule.class_names), "files": source.files, "files_digest": source.digest,
               "left_out": len(source.bad), "preprocess": datamodule.preprocess.to_dict(),
               **{("class_indices" if k == "classes" else k): v for k, v in split.items() if v is not None}}
    profile = {("validation" if k == "val" else k): v for k, v in profile.items()}
    return ImageDataset(dataset_source(source.uri), source.name, digest, profile)


def log_dataset(client, run_id: str, datamodule) -> ImageDataset | None:
    """Log the datamodule's dataset as the run's training input, with its class balance (class_balance.csv) and the
    images left out (bad_files.txt); None for data that is not an image dataset."""
    if not hasattr(datamodule, "class_counts"):
        return None
    dataset = image_dataset(datamodule)
    counts = datamodule.class_counts()
    log_labeled_images(client, run_id, datamodule, sum(counts["train"]))
    rows = ["class," + ",".join(counts)] + [",".join([_csv_cell(name), *(str(counts[p][i]) for p in counts)])
                                            for i, name in enumerate(datamodule.class_names)]
    client.log_text(run_id, "\n".join(rows) + "\n", "class_balance.csv")
    bad = datamodule.source().bad
    if bad:
        client.log_text(run_id, "".join(f"{name}\t{why}\n" for name, why in bad), "bad_files.txt")
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


def _csv_cell(text: str) -> str:
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text


def log_labeled_images(client, run_id: str, datamodule, labeled: int) -> None:
    """`data/labeled_images` (the training images with labels), and with a labeled subset `data/unlabeled_images`
    and labeled_images.csv: which images were labeled (their position in the source's training images) and their
    label."""
    metrics = {"data/labeled_images": labeled}
    splits = getattr(datamodule, "_splits", None)
    if splits is not None and splits.labeled_positions is not None:
        metrics["data/unlabeled_images"] = len(splits.unlabeled)
        rows = zip(splits.labeled_positions.tolist(), splits.train.labels.tolist())
        client.log_text(run_id, "index,label\n" + "".join(f"{i},{label}\n" for i, label in rows), "labeled_images.csv")
    client.log_batch(run_id, metrics=[Metric(key, value, int(time.time() * 1000), 0) for key, value in metrics.items()])
