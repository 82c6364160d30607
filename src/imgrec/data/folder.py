"""data=folder: your own images, listed from a folder.

    DIR/<class>/...                 one sub-folder per class (the ImageFolder convention; its files found recursively)
    DIR/train/<class>/..., DIR/val/<class>/..., DIR/test/<class>/...
                                    split folders, each used when present (val may be valid/ or validation/)
    DIR/... + data.labels=FILE.csv  a flat folder and a CSV of `file,label` (a path relative to DIR; a label is a
                                    class name, or an index when every label is a number)

The classes are the class folders' names as written on disk (spaces and Unicode kept), sorted; for a CSV, its
class names sorted, or 0..max for indices. Files are the image files (imgrec.data.decode.IMAGE_SUFFIXES) below a
class folder; hidden files and folders are passed over. Splits a folder lacks are drawn by data.split_seed.
"""

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgrec.data.cache import PARTS, Listing
from imgrec.data.decode import IMAGE_SUFFIXES
from imgrec.errors import ConfigError, DataFileError, DataNotFoundError

SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass(frozen=True)
class FileReader:
    """Image i of a listing: its file under `root` (picklable, for the decode workers)."""

    root: Path
    names: list[str]

    def __call__(self, index: int) -> Path:
        return self.root / self.names[index]


def list_folder(root: str | Path, labels: str | Path | None = None) -> Listing:
    """The images of `root` with their labels and splits; one-line errors for a folder that is not a dataset."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"data.root: no such folder {root}")
    root = root.resolve()
    if labels is not None:
        names, label_names, parts = _from_csv(root, _csv_path(root, labels))
        class_names, indices = _classes_of(label_names)
    else:
        names, indices, parts, class_names = _from_class_folders(root)
    stamps = np.array([_stamp(root / name) for name in names], dtype=np.int64).reshape(-1, 2)
    return Listing(names=names, labels=np.asarray(indices, dtype=np.int64), parts=np.asarray(parts, dtype=np.int8),
                   class_names=tuple(class_names), reader=FileReader(root, names), stamps=stamps)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:  # a broken link: listed, and named when it fails to decode
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)


def _from_class_folders(root: Path) -> tuple[list[str], list[int], list[int], list[str]]:
    split_dirs = {part: next((root / d for d in folders if (root / d).is_dir()), None)
                  for part, folders in SPLIT_FOLDERS.items()}
    if split_dirs["train"] is None and any(split_dirs.values()):
        found = ", ".join(f"{d.name}/" for d in split_dirs.values() if d is not None)
        raise DataFileError(f"data.root: {root} has {found} but no train/ folder: the training images go in train/<class>/")
    tops = {part: d for part, d in split_dirs.items() if d is not None} or {"train": root}
    class_names = _class_folders(tops["train"], root)
    names, indices, parts = [], [], []
    for part, top in tops.items():
        for folder in _class_folders(top, root):
            if folder not in class_names:
                raise DataFileError(f"data.root: {top / folder} is a class that {tops['train']} does not have "
                                    f"(its classes: {', '.join(class_names)})")
        for index, name in enumerate(class_names):
            files = _image_files(top / name, root)
            if not files:
                where = top / name
                raise DataFileError(f"data.root: the class folder {where} holds no images"
                                    if where.is_dir() else f"data.root: {top} has no folder for the class {name!r}")
            names += files
            indices += [index] * len(files)
            parts += [PARTS.index(part)] * len(files)
    return names, indices, parts, class_names


def _class_folders(top: Path, root: Path) -> list[str]:
    folders = sorted(entry.name for entry in os.scandir(top)
                     if entry.is_dir() and not entry.name.startswith(".")
                     and not (top == root and entry.name in sum(SPLIT_FOLDERS.values(), ())))
    if not folders:
        loose = _image_files(top, root, recursive=False)
        raise DataFileError(f"data.root: {top} holds {'images but ' if loose else ''}no class folders: put each "
                            "class's images in a folder of its own (DIR/<class>/...), or give data.labels=FILE.csv "
                            "(columns file,label)")
    return folders


def _image_files(folder: Path, root: Path, recursive: bool = True) -> list[str]:
    """The image files below `folder` as sorted paths relative to `root` (links followed, hidden entries passed)."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found += [os.path.relpath(os.path.join(top, f), root) for f in files
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
    return sorted(Path(name).as_posix() for name in found)


def _csv_path(root: Path, labels: str | Path) -> Path:
    for candidate in (Path(labels).expanduser(), root / labels):
        if candidate.is_file():
            return candidate
    raise DataNotFoundError(f"data.labels: no such file {labels} (looked in the current folder and in {root})")


def _from_csv(root: Path, path: Path) -> tuple[list[str], list[str], list[int]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if "file" not in header or "label" not in header:
        raise DataFileError(f"data.labels: {path} needs the columns file,label in its first line, found {rows[0] if rows else 'nothing'}")
    file_at, label_at = header.index("file"), header.index("label")
    names, labels, seen = [], [], set()
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(file_at, label_at) or not row[label_at].strip():
            raise DataFileError(f"data.labels: {path} line {line} has no label: {','.join(row)}")
        name = Path(row[file_at].strip()).as_posix()
        if not (root / name).is_file():
            raise DataFileError(f"data.labels: {path} line {line} names {name}, which is not a file in {root}")
        if name in seen:
            raise DataFileError(f"data.labels: {path} line {line} names {name} a second time")
        seen.add(name)
        names.append(name)
        labels.append(row[label_at].strip())
    if not names:
        raise DataFileError(f"data.labels: {path} lists no images")
    return names, labels, [PARTS.index("train")] * len(names)


def _classes_of(labels: list[str]) -> tuple[list[str], list[int]]:
    """(class names, each label's index): names sorted, or 0..max when every label is an index."""
    if all(label.isdigit() for label in labels):
        indices = [int(label) for label in labels]
        missing = sorted(set(range(max(indices) + 1)) - set(indices))
        if missing:
            raise ConfigError(f"data.labels: the labels are class indices 0..{max(indices)}, but class "
                              f"{missing[0]} has no images{f' (nor {len(missing) - 1} more)' if len(missing) > 1 else ''}")
        return [str(i) for i in range(max(indices) + 1)], indices
    names = sorted(set(labels))
    position = {name: i for i, name in enumerate(names)}
    return names, [position[label] for label in labels]
