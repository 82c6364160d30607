"""Write tiny datasets in the real on-disk formats, for tests.

Images are class-dependent random patterns plus noise (so a small net can
learn them) and labels cover every class. Each writer returns the arrays it
wrote as `Splits` (images uint8 (N,C,H,W), labels int64), ready to compare
with `imgrec.data.catalog.load_dataset`.

CIFAR pickles are written the way Python 2's cPickle wrote the official
files: protocol 2, strings as byte strings, numpy globals under their
numpy 1.x names (`numpy.core.multiarray._reconstruct`).
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from imgrec.data.catalog import CIFAR10_CLASSES, CIFAR100_FINE_CLASSES, Splits
from imgrec.data.formats import idx_bytes

IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


# ----------------------------------------------------------------- synthetic data


def make_images(
    labels: np.ndarray, shape: tuple[int, int, int], num_classes: int, seed: int
) -> np.ndarray:
    """uint8 images (N, *shape): one fixed random pattern per class, plus noise."""
    rng = np.random.default_rng(seed)
    # The class patterns use a fixed seed so train and test share them.
    patterns = np.random.default_rng(12345).integers(0, 256, size=(num_classes, *shape))
    noise = rng.normal(0.0, 25.0, size=(len(labels), *shape))
    return np.clip(0.8 * patterns[labels] + 25 + noise, 0, 255).astype(np.uint8)


def make_labels(n: int, num_classes: int, seed: int) -> np.ndarray:
    """int64 labels covering every class (when n >= num_classes), shuffled."""
    return np.random.default_rng(seed).permutation(np.arange(n) % num_classes).astype(np.int64)


def make_split(
    n_train: int, n_test: int, shape: tuple[int, int, int], num_classes: int, seed: int = 0
) -> Splits:
    train_labels = make_labels(n_train, num_classes, seed)
    test_labels = make_labels(n_test, num_classes, seed + 1)
    return Splits(
        make_images(train_labels, shape, num_classes, seed + 2),
        train_labels,
        make_images(test_labels, shape, num_classes, seed + 3),
        test_labels,
    )


# --------------------------------------------------------------------------- IDX


def write_idx_dataset(
    root: Path,
    n_train: int = 100,
    n_test: int = 50,
    gz: bool = True,
    shape: tuple[int, int] = (28, 28),
    num_classes: int = 10,
    seed: int = 0,
) -> Splits:
    """Write the four MNIST-style IDX files into `root` (created if needed)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    splits = make_split(n_train, n_test, (1, *shape), num_classes, seed)
    arrays = {
        "train_images": splits.train_images[:, 0],
        "train_labels": splits.train_labels.astype(np.uint8),
        "test_images": splits.test_images[:, 0],
        "test_labels": splits.test_labels.astype(np.uint8),
    }
    for key, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (root / f"{IDX_STEMS[key]}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (root / IDX_STEMS[key]).write_bytes(data)
    return splits


# ------------------------------------------------------------------------- CIFAR


class Python2StylePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles like Python 2's cPickle did for the official CIFAR files."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_string(self, obj: bytes | str) -> None:
        # Python 2 str: SHORT_BINSTRING / BINSTRING, which load as bytes.
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def py2_pickle_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    Python2StylePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar_batch(
    images: np.ndarray, labels_by_key: dict[str, np.ndarray], batch_label: str
) -> dict[bytes, Any]:
    """An official-style batch dict: bytes keys, planar (N, 3072) data, list labels."""
    batch: dict[bytes, Any] = {
        b"batch_label": batch_label.encode(),
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    for key, labels in labels_by_key.items():
        batch[key.encode()] = [int(label) for label in labels]
    return batch


def _write_cifar_files(
    root: Path, folder: str, tarball: str, files: dict[str, bytes], as_tarball: bool
) -> None:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if not as_tarball:
        (root / folder).mkdir(exist_ok=True)
        for name, data in files.items():
            (root / folder / name).write_bytes(data)
        return
    with tarfile.open(root / tarball, "w:gz") as archive:
        directory = tarfile.TarInfo(folder)
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def write_cifar10(
    root: Path, n_per_batch: int = 20, as_tarball: bool = False, seed: int = 0
) -> Splits:
    """Write CIFAR-10 (5 train batches + test_batch + batches.meta) into `root`."""
    splits = make_split(5 * n_per_batch, n_per_batch, (3, 32, 32), 10, seed)
    files = {}
    for index, name in enumerate(CIFAR10_TRAIN_BATCHES):
        part = slice(index * n_per_batch, (index + 1) * n_per_batch)
        batch = cifar_batch(
            splits.train_images[part], {"labels": splits.train_labels[part]}, name
        )
        files[name] = py2_pickle_bytes(batch)
    test = cifar_batch(splits.test_images, {"labels": splits.test_labels}, "test_batch")
    files["test_batch"] = py2_pickle_bytes(test)
    meta = {b"label_names": list(CIFAR10_CLASSES), b"num_vis": 3072}
    files["batches.meta"] = py2_pickle_bytes(meta)
    _write_cifar_files(root, "cifar-10-batches-py", "cifar-10-python.tar.gz", files, as_tarball)
    return splits


def cifar100_coarse_labels(fine_labels: np.ndarray) -> np.ndarray:
    """The coarse labels these fixtures write (not the official mapping)."""
    return fine_labels // 5


def write_cifar100(root: Path, n: int = 200, as_tarball: bool = False, seed: int = 0) -> Splits:
    """Write CIFAR-100 (train, test, meta) with `n` images per split into `root`."""
    splits = make_split(n, n, (3, 32, 32), 100, seed)
    files = {}
    for name, images, fine in (
        ("train", splits.train_images, splits.train_labels),
        ("test", splits.test_images, splits.test_labels),
    ):
        labels = {"fine_labels": fine, "coarse_labels": cifar100_coarse_labels(fine)}
        files[name] = py2_pickle_bytes(cifar_batch(images, labels, name))
    meta = {
        b"fine_label_names": list(CIFAR100_FINE_CLASSES),
        b"coarse_label_names": [f"superclass_{i}" for i in range(20)],
    }
    files["meta"] = py2_pickle_bytes(meta)
    _write_cifar_files(root, "cifar-100-python", "cifar-100-python.tar.gz", files, as_tarball)
    return splits


# ------------------------------------------------------------- your own images


SAMPLE_PHOTOS = {  # real photographs shipped with scikit-image and scikit-learn, by the class they stand for
    "cat": ("skimage", "chelsea.png"), "coffee": ("skimage", "coffee.png"), "rocket": ("skimage", "rocket.jpg"),
    "astronaut": ("skimage", "astronaut.png"), "china": ("sklearn", "china.jpg"), "flower": ("sklearn", "flower.jpg"),
}
GRAY_TEXTURES = {"brick": "brick.png", "grass": "grass.png", "gravel": "gravel.png"}  # 512 x 512 grayscale photos


def sample_photo(kind: str, name: str):  # a PIL image
    from importlib.resources import files

    from PIL import Image

    folder = files("skimage.data") if kind == "skimage" else files("sklearn.datasets") / "images"
    return Image.open(folder / name)


def write_image_folder(root: Path, classes: tuple[str, ...] = ("a", "b", "c"), per_class: int = 12,
                       shape: tuple[int, int, int] = (3, 20, 24), suffix: str = ".png", split_folders: tuple[str, ...] = (),
                       seed: int = 0) -> dict[str, list[tuple[Path, int]]]:
    """Class folders of learnable pattern images (make_images) as files: ROOT/<class>/..., or with `split_folders`
    ROOT/<split>/<class>/... for each; returns {split or "": [(file, label)]}."""
    from PIL import Image

    written = {}
    for number, split in enumerate(split_folders or ("",)):
        labels = make_labels(per_class * len(classes), len(classes), seed + number)
        images = make_images(labels, shape, len(classes), seed + 10 + number)
        files = []
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = Path(root) / split / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            pixels = image[0] if shape[0] == 1 else image.transpose(1, 2, 0)
            path = folder / f"{index:04d}{suffix}"
            Image.fromarray(pixels).save(path, **({"quality": 95} if suffix in (".jpg", ".jpeg") else {}))
            files.append((path, int(label)))
        written[split] = files
    return written


def write_photo_folder(root: Path, gray: bool = False, per_class: int = 10, size: int = 40, seed: int = 0) -> tuple[str, ...]:
    """A folder of real photographs in classes: random crops (of random sizes, saved at their own size) of
    scikit-image's and scikit-learn's sample photos (RGB: cat, coffee, rocket, ...) or, with `gray`, of its
    grayscale textures (brick, grass, gravel). Returns the class names."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sources = GRAY_TEXTURES if gray else {k: v[1] for k, v in list(SAMPLE_PHOTOS.items())[:4]}
    for name, file in sources.items():
        photo = sample_photo("skimage" if gray or SAMPLE_PHOTOS[name][0] == "skimage" else "sklearn", file)
        photo = photo.convert("L" if gray else "RGB")
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            side = int(rng.integers(size, 2 * size))
            left, top = (int(rng.integers(0, extent - side)) for extent in photo.size)
            crop = photo.crop((left, top, left + side, top + side)).resize((size, size))
            crop.save(folder / f"{index:03d}{'.png' if index % 2 else '.jpg'}")
    return tuple(sorted(sources))


def write_hf_dataset(root: Path, classes: tuple[str, ...] = ("a", "b", "c"), per_class: int = 10,
                     shape: tuple[int, int, int] = (3, 16, 16), splits: tuple[str, ...] = ("train", "test"),
                     parquet: bool = False, seed: int = 0):
    """A HuggingFace dataset of pattern images (an Image column `img`, a ClassLabel `label`), saved with
    save_to_disk into `root`, or as `<split>.parquet` files in it; returns the DatasetDict."""
    import io

    import datasets
    from PIL import Image

    parts = {}
    for number, split in enumerate(splits):
        labels = make_labels(per_class * len(classes), len(classes), seed + number)
        images = make_images(labels, shape, len(classes), seed + 10 + number)
        pngs = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image[0] if shape[0] == 1 else image.transpose(1, 2, 0)).save(buffer, "PNG")
            pngs.append({"bytes": buffer.getvalue(), "path": None})
        features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=list(classes))})
        parts[split] = datasets.Dataset.from_dict({"img": pngs, "label": labels.tolist()}, features=features)
    dataset = datasets.DatasetDict(parts)
    Path(root).mkdir(parents=True, exist_ok=True)
    if parquet:
        for split, part in parts.items():
            part.to_parquet(str(Path(root) / f"{split}.parquet"))
    else:
        dataset.save_to_disk(str(root))
    return dataset
