"""Dataset catalog: what each dataset is, where its files live, and how to load it.

File-based datasets are looked up in this order:

1. `root` (the configured data directory), if it holds a complete copy;
2. known system locations, e.g. `/usr/share/datasets/fashion-mnist` from the
   Debian package `dataset-fashion-mnist` (trusted as-is: Debian recompresses
   the files, so the upstream checksums do not apply to them);
3. a download into `root` with pooch, checked against pinned SHA256 hashes,
   when downloading is enabled.

`load_dataset` returns uint8 images shaped (N, C, H, W) and int64 labels,
validated against the catalog entry, so callers never see a malformed array.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pooch

from imgrec.data.formats import read_cifar_splits, read_idx, write_cifar_batch, write_idx
from imgrec.errors import ConfigError, DataFileError, DataNotFoundError, one_line

__all__ = [
    "DATASETS",
    "CifarLayout",
    "DatasetSpec",
    "IdxLayout",
    "RemoteFile",
    "Splits",
    "default_root",
    "get_spec",
    "load_dataset",
    "locate",
]

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class Splits(NamedTuple):
    """A dataset's official (or, for digits, fixed) train/test split."""

    train_images: np.ndarray  # uint8 (N, C, H, W)
    train_labels: np.ndarray  # int64 (N,)
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclass(frozen=True)
class RemoteFile:
    """One file to download, pinned by its SHA256."""

    url: str
    sha256: str

    @property
    def fname(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class IdxLayout:
    """The four MNIST-style IDX files in one directory, each raw or `.gz`."""

    train_images: str = "train-images-idx3-ubyte"
    train_labels: str = "train-labels-idx1-ubyte"
    test_images: str = "t10k-images-idx3-ubyte"
    test_labels: str = "t10k-labels-idx1-ubyte"

    @property
    def stems(self) -> tuple[str, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    def describe(self) -> str:
        return ", ".join(f"{stem}[.gz]" for stem in self.stems)

    def find(self, directory: Path) -> Path | None:
        """The directory itself when it holds all four files, else None."""
        return directory if all(_idx_file(directory, stem) for stem in self.stems) else None

    def files(self, source: Path) -> list[Path]:
        """The files `read` reads from what `find` returned."""
        return [_idx_file(source, stem) for stem in self.stems]

    def write(self, directory: Path, part: str, images: np.ndarray, labels: np.ndarray) -> list[Path]:
        """Split `part` (train | test): uint8 images (N, 1, H, W) and labels as the two .gz files."""
        stems = (self.train_images, self.train_labels) if part == "train" else (self.test_images, self.test_labels)
        return [write_idx(directory / f"{stems[0]}.gz", images[:, 0]),
                write_idx(directory / f"{stems[1]}.gz", labels.astype(np.uint8))]

    def read(self, source: Path, spec: DatasetSpec) -> Splits:
        train = _read_idx_pair(source, self.train_images, self.train_labels, spec)
        test = _read_idx_pair(source, self.test_images, self.test_labels, spec)
        return Splits(*train, *test)


@dataclass(frozen=True)
class CifarLayout:
    """CIFAR's "python version": an extracted folder of pickles, or its tarball."""

    folder: str
    tarball: str
    train_batches: tuple[str, ...]
    test_batches: tuple[str, ...]
    label_key: str

    def describe(self) -> str:
        return f"{self.tarball} or its extracted {self.folder}/"

    def find(self, directory: Path) -> Path | None:
        """The extracted folder if complete, else the tarball if present, else None."""
        folder = directory / self.folder
        if all((folder / name).is_file() for name in (*self.train_batches, *self.test_batches)):
            return folder
        tarball = directory / self.tarball
        return tarball if tarball.is_file() else None

    def files(self, source: Path) -> list[Path]:
        """The files `read` reads from what `find` returned."""
        return [source] if source.is_file() else [source / name for name in (*self.train_batches, *self.test_batches)]

    def write(self, directory: Path, part: str, images: np.ndarray, labels: np.ndarray) -> list[Path]:
        """Split `part` (train | test) as the extracted folder's pickles, its images spread over the part's batches."""
        names = self.train_batches if part == "train" else self.test_batches
        chunks = zip(np.array_split(images, len(names)), np.array_split(labels, len(names)))
        return [write_cifar_batch(directory / self.folder / name, chunk_images, chunk_labels, self.label_key)
                for name, (chunk_images, chunk_labels) in zip(names, chunks)]

    def read(self, source: Path, spec: DatasetSpec) -> Splits:
        splits = read_cifar_splits(
            source, {"train": self.train_batches, "test": self.test_batches}, self.label_key
        )
        for images, labels in splits.values():
            _check_split(images, labels, spec, images_file=source, labels_file=source)
        return Splits(*splits["train"], *splits["test"])


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline needs to know about one dataset."""

    name: str
    in_shape: tuple[int, int, int]  # (C, H, W)
    class_names: tuple[str, ...]
    layout: IdxLayout | CifarLayout | None = None  # None: bundled with scikit-learn
    downloads: tuple[RemoteFile, ...] = ()
    system_dirs: tuple[Path, ...] = ()
    install_hint: str = ""  # another way to get the files, e.g. a system package

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ------------------------------------------------------------------ the catalog

_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_IDX = IdxLayout()

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

CIFAR100_FINE_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table",
    "tank", "telephone", "television", "tiger", "tractor", "train", "trout",
    "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
    "worm",
)  # fmt: skip

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

DIGIT_CLASSES = tuple(str(digit) for digit in range(10))

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        in_shape=(1, 28, 28),
        class_names=DIGIT_CLASSES,
        layout=_IDX,
        downloads=(
            RemoteFile(
                _MNIST_URL + "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            RemoteFile(
                _MNIST_URL + "train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            RemoteFile(
                _MNIST_URL + "t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            RemoteFile(
                _MNIST_URL + "t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        ),
        system_dirs=(Path("/usr/share/datasets/mnist"),),
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        in_shape=(1, 28, 28),
        class_names=FASHION_MNIST_CLASSES,
        layout=_IDX,
        downloads=(
            RemoteFile(
                _FASHION_URL + "train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            RemoteFile(
                _FASHION_URL + "train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            RemoteFile(
                _FASHION_URL + "t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            RemoteFile(
                _FASHION_URL + "t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        ),
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        install_hint="run `apt-get install dataset-fashion-mnist`",
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        in_shape=(3, 32, 32),
        class_names=CIFAR10_CLASSES,
        layout=CifarLayout(
            folder="cifar-10-batches-py",
            tarball="cifar-10-python.tar.gz",
            train_batches=tuple(f"data_batch_{i}" for i in range(1, 6)),
            test_batches=("test_batch",),
            label_key="labels",
        ),
        downloads=(
            RemoteFile(
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            ),
        ),
    ),
    "cifar100": DatasetSpec(
        name="cifar100",
        in_shape=(3, 32, 32),
        class_names=CIFAR100_FINE_CLASSES,
        layout=CifarLayout(
            folder="cifar-100-python",
            tarball="cifar-100-python.tar.gz",
            train_batches=("train",),
            test_batches=("test",),
            label_key="fine_labels",
        ),
        downloads=(
            RemoteFile(
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
            ),
        ),
    ),
    "digits": DatasetSpec(name="digits", in_shape=(1, 8, 8), class_names=DIGIT_CLASSES),
}


# ---------------------------------------------------------------- public lookup


def get_spec(name: str) -> DatasetSpec:
    """The catalog entry for `name`; ConfigError listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise ConfigError(f"data.name: unknown dataset {name!r}; known: {known}") from None


def default_root() -> Path:
    """Where files are looked for and downloaded to when no root is configured."""
    return Path(pooch.os_cache("imgrec"))


def locate(name: str, root: str | Path | None, download: bool) -> Path:
    """Where the dataset's files are: found locally, or downloaded into `root`.

    Returns the directory holding the IDX files, CIFAR's extracted folder or its
    tarball, or (for digits) scikit-learn's bundled data file.
    """
    spec = get_spec(name)
    if spec.layout is None:
        return Path(str(importlib.resources.files("sklearn.datasets.data") / "digits.csv.gz"))
    root = Path(root) if root is not None else default_root()
    places = _search_places(spec, root)
    for place in places:
        source = spec.layout.find(place)
        if source is not None:
            return source
    if not download:
        raise DataNotFoundError(_not_found_message(spec, root, places, failure=None))
    _download(spec, root, places)
    source = spec.layout.find(root)
    if source is None:  # only if the downloads do not match the layout: a catalog bug
        raise DataNotFoundError(_not_found_message(spec, root, places, failure="files missing"))
    return source


def dataset_files(name: str, root: str | Path | None, download: bool) -> tuple[Path, list[Path]]:
    """(where the dataset is, the files its splits are read from)."""
    spec, source = get_spec(name), locate(name, root, download)
    return source, [source] if spec.layout is None else spec.layout.files(source)


def root_of(name: str, source: str | Path) -> Path | None:
    """The folder to pass as data.root to find the dataset at `source` (what `locate` returns, or the source
    of a run's MLflow dataset input) again; None for data bundled with a library (digits)."""
    layout, source = get_spec(name).layout, Path(source).resolve()
    if layout is None:
        return None
    return source if layout.find(source) == source else source.parent


def write_split(name: str, directory: str | Path, part: str, images: np.ndarray, labels: np.ndarray) -> list[Path]:
    """Split `part` (train | test) of dataset `name` written as its own files in `directory` (which load_dataset
    then reads, with the other part's files beside them): uint8 images (N, C, H, W), labels of its classes."""
    spec = get_spec(name)
    if spec.layout is None:
        raise ConfigError(f"{name} comes bundled with scikit-learn: it has no files to write")
    return spec.layout.write(Path(directory), part, np.asarray(images), np.asarray(labels))


def read_parts(name: str, root: str | Path | None, download: bool):
    """The dataset as imgrec.data.splits.Parts: its official train and test splits in memory, its validation split
    left to draw as the built-in datasets always drew it (at random, not per class)."""
    import torch

    from imgrec.data.decode import Preprocess
    from imgrec.data.splits import Parts, Split

    spec, files = get_spec(name), load_dataset(name, root, download)

    def split(images: np.ndarray, labels: np.ndarray) -> Split:
        return Split(torch.from_numpy(images), torch.arange(len(labels)), torch.from_numpy(labels))

    return Parts({"train": split(files.train_images, files.train_labels),
                  "test": split(files.test_images, files.test_labels)},
                 spec.class_names, Preprocess.native(spec.in_shape), stratify=False)


def load_dataset(name: str, root: str | Path | None, download: bool) -> Splits:
    """Load a dataset's train/test split as uint8 (N,C,H,W) images and int64 labels."""
    spec = get_spec(name)
    if spec.layout is None:
        return _load_digits()
    return spec.layout.read(locate(name, root, download), spec)


# ------------------------------------------------------------------- internals


def _search_places(spec: DatasetSpec, root: Path) -> list[Path]:
    return list(dict.fromkeys([root, *spec.system_dirs]))  # ordered, without duplicates


def _idx_file(directory: Path, stem: str) -> Path | None:
    # Prefer the .gz: it is what downloads produce, and what gets checksummed.
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_pair(
    directory: Path, images_stem: str, labels_stem: str, spec: DatasetSpec
) -> tuple[np.ndarray, np.ndarray]:
    images_file = _idx_file(directory, images_stem) or directory / images_stem
    labels_file = _idx_file(directory, labels_stem) or directory / labels_stem
    images = read_idx(images_file)
    labels = read_idx(labels_file)
    if images.ndim != 3:
        raise DataFileError(
            f"{images_file}: IDX images should be (N, H, W), found shape {images.shape}; "
            "delete it and download it again"
        )
    if labels.ndim != 1:
        raise DataFileError(
            f"{labels_file}: IDX labels should be (N,), found shape {labels.shape}; "
            "delete it and download it again"
        )
    images = images[:, np.newaxis]  # grayscale: add the channel axis
    labels = labels.astype(np.int64)
    _check_split(images, labels, spec, images_file=images_file, labels_file=labels_file)
    return images, labels


def _check_split(
    images: np.ndarray,
    labels: np.ndarray,
    spec: DatasetSpec,
    *,
    images_file: Path,
    labels_file: Path,
) -> None:
    """Raise DataFileError unless images match the spec's shape and labels are in range."""
    if images.shape[1:] != spec.in_shape:
        raise DataFileError(
            f"{images_file}: images have shape {images.shape[1:]}, "
            f"but {spec.name} images are {spec.in_shape}"
        )
    if len(images) != len(labels):
        raise DataFileError(
            f"{labels_file}: {len(labels)} labels for {len(images)} images in {images_file}; "
            "delete them and download them again"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataFileError(
            f"{labels_file}: labels range {labels.min()}..{labels.max()}, but {spec.name} "
            f"has {spec.num_classes} classes (0..{spec.num_classes - 1}); "
            "delete it and download it again"
        )


def _download(spec: DatasetSpec, root: Path, places: list[Path]) -> None:
    """Fetch every file of `spec` into `root`; files already there with the right hash are kept."""
    for remote in spec.downloads:
        try:
            pooch.retrieve(
                remote.url,
                known_hash=f"sha256:{remote.sha256}",
                fname=remote.fname,
                path=root,
                progressbar=_want_progressbar(),
            )
        except ValueError as exc:  # pooch's signal for a checksum mismatch
            raise DataFileError(
                f"{root / remote.fname}: download from {remote.url} failed its SHA256 check "
                f"({one_line(exc)}); delete {root / remote.fname} if present and retry, "
                "or check for a proxy that rewrites downloads"
            ) from None
        except OSError as exc:  # requests' errors (offline, HTTP 404, ...) are OSErrors
            failure = f"downloading {remote.url} failed: {type(exc).__name__}: {one_line(exc)}"
            raise DataNotFoundError(
                _not_found_message(spec, root, places, failure=failure)
            ) from None


def _not_found_message(
    spec: DatasetSpec, root: Path, places: list[Path], *, failure: str | None
) -> str:
    assert spec.layout is not None
    looked = ", ".join(f"{place} (data.root)" if place == root else str(place) for place in places)
    urls = " ".join(remote.url for remote in spec.downloads)
    ways = (
        [f"set data.download=true to download it into {root}"]
        if failure is None
        else ["check the network connection or proxy and retry"]
    )
    if spec.install_hint:
        ways.append(spec.install_hint)
    ways.append(f"download {urls} yourself into {root}")
    problem = "not found" if failure is None else f"not found locally and {failure}"
    return (
        f"dataset {spec.name!r} {problem}; looked in {looked} "
        f"for {spec.layout.describe()}; to get it: {', or '.join(ways)}"
    )


def _want_progressbar() -> bool:
    # pooch raises ValueError for progressbar=True without tqdm, which would
    # look like a checksum failure, so only ask for a bar when one can be drawn.
    return sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None


def _load_digits() -> Splits:
    """scikit-learn's 8x8 digits, scaled to 0..255, with a fixed 80/20 split."""
    from sklearn.datasets import load_digits  # slow import, needed only here

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[:, np.newaxis]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
    n_test = round(len(labels) * DIGITS_TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return Splits(images[train], labels[train], images[test], labels[test])
