"""data=hf: a HuggingFace dataset, listed for the decode cache.

    data.path=DIR          a `save_to_disk` folder (a Dataset or a DatasetDict), or a folder of parquet files
    data.path=FILE.parquet parquet files (a glob works too)
    data.path=NAME         a dataset on the hub, where a network allows (`datasets.load_dataset(NAME)`)

The image column is the one whose feature is `datasets.Image` (or data.image_column), the label column the
`ClassLabel` (or data.label_column; a column of integers or strings works too), and the class names are the
ClassLabel's. Its splits train, validation (valid, val) and test are used; splits it lacks are drawn by data.split_seed.
Images are read as their stored bytes (`Image(decode=False)`) and decoded by imgrec.data.decode, as a folder's are.
"""

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgrec.data.cache import PARTS, Listing
from imgrec.errors import ConfigError, DataNotFoundError, one_line

SPLIT_NAMES = {"train": "train", "validation": "val", "valid": "val", "val": "val", "test": "test"}
LABEL_NAMES = ("label", "labels", "class", "target", "y")


def load(path: str, download: bool = True) -> dict[str, Any]:
    """The dataset's splits {name: datasets.Dataset} (only those imgrec uses); DataNotFoundError in one line."""
    import datasets

    datasets.disable_progress_bars()
    local = Path(path).expanduser()
    try:
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            loaded = datasets.load_from_disk(str(local))
        elif local.is_file() or glob.glob(str(local)) and not local.is_dir():
            loaded = datasets.load_dataset("parquet", data_files=sorted(glob.glob(str(local))))
        elif local.is_dir():
            loaded = datasets.load_dataset(str(local))
        elif not download:
            raise DataNotFoundError(f"data.path: no such folder or file {path}, and data.download=false keeps the hub out")
        else:
            loaded = datasets.load_dataset(path)
    except DataNotFoundError:
        raise
    except Exception as err:  # datasets' own errors: offline, no such dataset, an unreadable file
        raise DataNotFoundError(f"data.path: cannot load {path} as a HuggingFace dataset ({type(err).__name__}: "
                                f"{one_line(err)[:300]})") from None
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    used = {name: split for name, split in splits.items() if name in SPLIT_NAMES}
    if "train" not in used:
        raise ConfigError(f"data.path: {path} has the splits {', '.join(splits)}; imgrec trains on one named train "
                          f"(and uses {', '.join(n for n in SPLIT_NAMES if n != 'train')} where present)")
    return used


def columns(split, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    """(the image column, the label column) of a split, found by their features unless given."""
    import datasets

    features = split.features
    if image_column is None:
        found = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
        if len(found) != 1:
            raise ConfigError(f"data.image_column: {'no' if not found else 'more than one'} column is an Image "
                              f"({', '.join(found or features)}); name the one to train on")
        image_column = found[0]
    if label_column is None:
        found = [name for name, feature in features.items() if isinstance(feature, datasets.ClassLabel)]
        found = found or [name for name in LABEL_NAMES if name in features]
        if len(found) != 1:
            raise ConfigError(f"data.label_column: no single label column among {', '.join(features)}; name it")
        label_column = found[0]
    for key, name in (("data.image_column", image_column), ("data.label_column", label_column)):
        if name not in features:
            raise ConfigError(f"{key}: no column {name!r}; the columns are {', '.join(features)}")
    return image_column, label_column


@dataclass
class RowReader:
    """Image i of a listing: the stored bytes of its row (or the file its row names). Holds the open splits: forked
    decode workers inherit them."""

    splits: dict[str, Any]
    rows: list[tuple[str, int]]
    image_column: str
    _columns: dict[str, Any] = field(default_factory=dict, repr=False)

    def __call__(self, index: int):
        split, row = self.rows[index]
        if split not in self._columns:
            self._columns[split] = self.splits[split].data.column(self.image_column)  # arrow: no decoding
        cell = self._columns[split][row].as_py()
        if cell is None:
            raise OSError("the row holds no image")
        if cell.get("bytes"):
            return cell["bytes"]
        return Path(cell["path"])


def list_dataset(splits: dict[str, Any], image_column: str | None, label_column: str | None) -> Listing:
    import datasets

    image_column, label_column = columns(splits["train"], image_column, label_column)
    feature = splits["train"].features[label_column]
    raw = {name: split.data.column(label_column).to_pylist() for name, split in splits.items()}
    values = [v for column in raw.values() for v in column]
    if isinstance(feature, datasets.ClassLabel):
        class_names = list(feature.names)
        labels = values
    elif all(isinstance(v, int) for v in values):
        class_names = [str(i) for i in range(max(values) + 1)]
        labels = values
    else:
        class_names = sorted({str(v) for v in values})
        labels = [class_names.index(str(v)) for v in values]
    if any(label is None or not 0 <= label < len(class_names) for label in labels):
        raise ConfigError(f"data.label_column: {label_column} holds labels outside the {len(class_names)} classes")
    rows = [(name, row) for name, split in splits.items() for row in range(len(split))]
    parts = [PARTS.index(SPLIT_NAMES[name]) for name, _ in rows]
    fingerprint = ",".join(f"{name}:{split._fingerprint}" for name, split in splits.items())
    return Listing(names=[f"{name}[{row}]" for name, row in rows], labels=np.asarray(labels, dtype=np.int64),
                   parts=np.asarray(parts, dtype=np.int8), class_names=tuple(class_names),
                   reader=RowReader(splits, rows, image_column), fingerprint=fingerprint)
