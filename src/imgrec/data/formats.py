"""Readers for the official on-disk dataset formats (numpy only).

* IDX (MNIST, Fashion-MNIST): raw or gzip-compressed, validated header and size.
* CIFAR-10/100 "python version": Python 2 pickles, read either from the
  extracted directory or straight out of the official tarball, through an
  unpickler that only admits numpy array reconstruction.

Every problem with a file's contents is raised as `DataFileError` with a
one-line message naming the file, so a truncated download never surfaces as
a numpy or pickle traceback.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from imgrec.errors import DataFileError, one_line

__all__ = ["CIFAR_IMAGE_SHAPE", "RestrictedUnpickler", "read_cifar", "read_cifar_splits", "read_idx"]

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UINT8 = 0x08
# Corrupt gzip streams surface as any of these, depending on where they break.
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)

CIFAR_IMAGE_SHAPE = (3, 32, 32)


# Every message starts with the file's name, so "it" is unambiguous.
_REDOWNLOAD = "delete it and download it again"


# --------------------------------------------------------------------------- IDX


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (raw or gzip, detected from the content) as a uint8 array.

    The header's magic number, element type and dimensions are validated, and
    the payload must hold exactly prod(dims) bytes.
    """
    path = Path(path)
    raw = _read_maybe_gzipped(path)
    dims, header_size = _parse_idx_header(raw, path)
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(raw) - header_size
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise DataFileError(
            f"{path}: IDX payload {problem} ({actual} bytes, header {tuple(dims)} "
            f"needs {expected}); {_REDOWNLOAD}"
        )
    # Copy so callers get a writable array (torch.from_numpy warns on read-only ones).
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def idx_bytes(array: np.ndarray) -> bytes:
    """A uint8 array as an IDX file: magic 0x00 0x00 0x08 ndim, big-endian dimensions, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An IDX file, gzipped (as MNIST and Fashion-MNIST are published)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(idx_bytes(array), mtime=0))
    return path


def _read_maybe_gzipped(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            head = handle.read(2)
            handle.seek(0)
            if head == _GZIP_MAGIC:
                with gzip.GzipFile(fileobj=handle) as unzipped:
                    return unzipped.read()
            return handle.read()
    except _GZIP_ERRORS as exc:
        raise DataFileError(
            f"{path}: corrupted or truncated gzip ({one_line(exc)}); {_REDOWNLOAD}"
        ) from None
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read ({one_line(exc)})") from None


def _parse_idx_header(raw: bytes, path: Path) -> tuple[list[int], int]:
    """Return (dims, header size in bytes) after checking the magic number."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataFileError(
            f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); "
            f"{_REDOWNLOAD}"
        )
    type_code, ndim = raw[2], raw[3]
    if type_code != _IDX_UINT8:
        raise DataFileError(
            f"{path}: IDX element type 0x{type_code:02x} is not uint8 (0x08); "
            f"{_REDOWNLOAD}"
        )
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_size:
        raise DataFileError(
            f"{path}: IDX header is truncated or declares {ndim} dimensions; "
            f"{_REDOWNLOAD}"
        )
    dims = [int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)]
    return dims, header_size


# ------------------------------------------------------------------------- CIFAR

# The official pickles only reconstruct numpy arrays; numpy 2 moved numpy.core
# to numpy._core, and loading the old name would emit a DeprecationWarning.
def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What protocol 2 pickles (Python 3) call to rebuild bytes: `_codecs.encode(text, 'latin1')`, nothing else."""
    if encoding.replace("-", "").lower() != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# Exactly what numpy arrays and bytes need, from Python 2's protocol 2 to Python 3's protocol 5 (the
# allowlist torch's weights-only unpickler keeps for the same job). Anything else is refused by name.
_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"): None,  # ndarray.__reduce__, protocols 2-4
    ("numpy._core.multiarray", "scalar"): None,
    ("numpy._core.numeric", "_frombuffer"): None,  # ndarray.__reduce_ex__(5): arrays as pickle buffers
    ("numpy", "ndarray"): None,
    ("numpy", "dtype"): None,
    ("_codecs", "encode"): _latin1_bytes,  # bytes in protocol 2 written by Python 3
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except what numpy arrays and bytes need.

    Plain `pickle.load` on a downloaded file runs whatever callable the file
    names; this one raises DataFileError naming the file and the global.
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str) -> None:
        # Python 2 str objects (the official keys and array bytes) load as bytes.
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy.core"):  # numpy 1.x pickles
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in _ALLOWED_GLOBALS:
            raise DataFileError(
                f"{self.source}: pickle refers to forbidden global {module}.{name}; "
                f"this is not an official CIFAR file, {_REDOWNLOAD}"
            )
        return _ALLOWED_GLOBALS[(module, name)] or super().find_class(module, name)


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str) -> Path:
    """A CIFAR "python version" batch: {data: uint8 (N, 3072) planar rows, <label_key>: [ints]}, pickled by Python 3
    (what read_cifar, and the official loaders, read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = {b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1),
             label_key.encode(): [int(label) for label in labels], b"batch_label": path.name.encode()}
    path.write_bytes(pickle.dumps(batch, protocol=4))
    return path


def read_cifar(
    source: Path, batch_names: Sequence[str], label_key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate CIFAR batches: (images uint8 (N,3,32,32), labels int64 (N,)).

    `source` is the extracted directory (e.g. `cifar-10-batches-py`) or the
    official tarball (e.g. `cifar-10-python.tar.gz`); `label_key` is `labels`
    (CIFAR-10) or `fine_labels` / `coarse_labels` (CIFAR-100).
    """
    return read_cifar_splits(source, {"batches": batch_names}, label_key)["batches"]


def read_cifar_splits(
    source: Path, splits: Mapping[str, Sequence[str]], label_key: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Like `read_cifar` for several splits at once, e.g. {"train": [...], "test": [...]}.

    A tarball is decompressed once for all splits instead of once per split.
    """
    source = Path(source)
    names = [name for batch_names in splits.values() for name in batch_names]
    batches = _read_cifar_pickles(source, names)
    result = {}
    for split, batch_names in splits.items():
        arrays = [
            _cifar_arrays(batches[name], label_key, _member_label(source, name))
            for name in batch_names
        ]
        result[split] = (
            np.concatenate([images for images, _ in arrays]),
            np.concatenate([labels for _, labels in arrays]),
        )
    return result


def _read_cifar_pickles(source: Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Load the named pickles from a directory or from the official tarball.

    In a tarball, a member matches a name when its last path component equals it
    (the official members are e.g. `cifar-10-batches-py/data_batch_1`).
    """
    if source.is_dir():
        return {name: _load_from_directory(source, name) for name in names}
    if not source.exists():
        raise DataFileError(f"{source}: no such CIFAR directory or tarball")
    return _load_from_tarball(source, names)


def _cifar_arrays(
    batch: dict[str, Any], label_key: str, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Convert one batch dict to (images uint8 (N,3,32,32), labels int64 (N,)).

    The official `data` rows are planar: 1024 R, then 1024 G, then 1024 B
    values, each a row-major 32x32 image, so a plain reshape gives (C, H, W).
    """
    for key in ("data", label_key):
        if key not in batch:
            raise DataFileError(f"{source}: missing key {key!r}; {_REDOWNLOAD}")
    data = batch["data"]
    pixels_per_image = int(np.prod(CIFAR_IMAGE_SHAPE))
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == pixels_per_image
    ):
        found = (
            f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        )
        raise DataFileError(
            f"{source}: 'data' should be a uint8 array (N, {pixels_per_image}), "
            f"found {found}; {_REDOWNLOAD}"
        )
    labels = _as_label_array(batch[label_key], label_key, source)
    if len(labels) != len(data):
        raise DataFileError(
            f"{source}: {len(data)} images but {len(labels)} {label_key!r}; {_REDOWNLOAD}"
        )
    return data.reshape((len(data), *CIFAR_IMAGE_SHAPE)), labels


def _load_cifar_pickle(data: bytes, source: str) -> dict[str, Any]:
    """Unpickle one CIFAR file safely; return its dict with str keys."""
    try:
        loaded = RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except DataFileError:
        raise
    except Exception as exc:  # corrupt pickles can fail with almost any exception type
        raise DataFileError(
            f"{source}: corrupted pickle ({type(exc).__name__}: {one_line(exc)}); "
            f"{_REDOWNLOAD}"
        ) from None
    if not isinstance(loaded, dict):
        raise DataFileError(f"{source}: expected a dict, found {type(loaded).__name__}")
    return {_as_str(key): value for key, value in loaded.items()}


def _load_from_directory(directory: Path, name: str) -> dict[str, Any]:
    path = directory / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(
            f"{path}: missing CIFAR file; extract or download the dataset again"
        ) from None
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read ({one_line(exc)})") from None
    return _load_cifar_pickle(data, str(path))


def _load_from_tarball(tarball: Path, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    wanted = set(names)
    found: dict[str, dict[str, Any]] = {}
    try:
        # Streaming mode ("r|*") reads the gzip once, front to back.
        with tarfile.open(tarball, mode="r|*") as archive:
            for member in archive:
                name = PurePosixPath(member.name).name
                if name in wanted and name not in found and member.isfile():
                    data = archive.extractfile(member).read()  # type: ignore[union-attr]
                    found[name] = _load_cifar_pickle(data, f"{tarball} (member {member.name})")
                    if len(found) == len(wanted):
                        break
    except (tarfile.TarError, OSError, *_GZIP_ERRORS) as exc:
        raise DataFileError(
            f"{tarball}: corrupted or truncated tarball ({one_line(exc)}); "
            f"{_REDOWNLOAD}"
        ) from None
    missing = [name for name in names if name not in found]
    if missing:
        raise DataFileError(
            f"{tarball}: tarball has no member {', '.join(missing)}; {_REDOWNLOAD}"
        )
    return found


def _member_label(source: Path, name: str) -> str:
    """How messages name one batch: the file itself, or the tarball it lives in."""
    return str(source / name) if source.is_dir() else f"{source} (member {name})"


def _as_label_array(values: object, label_key: str, source: str) -> np.ndarray:
    try:
        labels = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise DataFileError(f"{source}: unreadable {label_key!r} ({one_line(exc)})") from None
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise DataFileError(
            f"{source}: {label_key!r} should be a list of integers, found {labels.dtype} "
            f"{labels.shape}; {_REDOWNLOAD}"
        )
    return labels.astype(np.int64)


def _as_str(key: object) -> object:
    return key.decode("latin-1") if isinstance(key, bytes) else key

