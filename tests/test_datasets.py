"""Tests for the dataset readers (imgrec.data.formats) and catalog (imgrec.data.catalog).

Everything runs offline on tiny files written in the real formats by
tests/dataset_files.py; the only real dataset used is Debian's Fashion-MNIST,
when it is installed.
"""

from __future__ import annotations

import builtins
import dataclasses
import gzip
import hashlib
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pooch
import pooch.core
import pytest
import requests

from imgrec.data import catalog
from imgrec.data.catalog import DATASETS, RemoteFile, Splits, load_dataset, locate
from imgrec.data.formats import read_cifar, read_idx
from imgrec.errors import ConfigError, DataFileError, DataNotFoundError
from tests.dataset_files import (
    IDX_STEMS,
    cifar100_coarse_labels,
    cifar_batch,
    idx_bytes,
    py2_pickle_bytes,
    write_cifar10,
    write_cifar100,
    write_idx_dataset,
)

FASHION_SYSTEM_FILE = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def assert_splits_equal(actual: Splits, expected: Splits) -> None:
    for name, got, want in zip(Splits._fields, actual, expected):
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)


# ---------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    written = write_idx_dataset(tmp_path, n_train=30, n_test=20, gz=gz)
    suffix = ".gz" if gz else ""

    images = read_idx(tmp_path / f"{IDX_STEMS['train_images']}{suffix}")
    labels = read_idx(tmp_path / f"{IDX_STEMS['train_labels']}{suffix}")

    assert images.dtype == np.uint8 and images.shape == (30, 28, 28)
    assert images.flags.writeable
    np.testing.assert_array_equal(images, written.train_images[:, 0])
    np.testing.assert_array_equal(labels, written.train_labels)
    assert_splits_equal(load_dataset("mnist", tmp_path, download=False), written)


def test_helper_data_is_learnable_and_covers_all_classes(tmp_path: Path) -> None:
    written = write_idx_dataset(tmp_path, n_train=40, n_test=20)
    assert set(written.train_labels) == set(range(10))
    assert set(written.test_labels) == set(range(10))
    # Same class -> similar images: nearest class mean classifies the test split.
    means = np.stack(
        [written.train_images[written.train_labels == k].mean(0) for k in range(10)]
    ).reshape(10, -1)
    test = written.test_images.reshape(len(written.test_images), -1).astype(float)
    predicted = ((test[:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == written.test_labels).mean() > 0.9


def _write_raw_idx(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / IDX_STEMS["train_images"]
    path.write_bytes(data)
    return path


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, n_train=30, n_test=10, gz=True)
    path = tmp_path / f"{IDX_STEMS['train_images']}.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(DataFileError, match="gzip") as caught:
        read_idx(path)
    message = str(caught.value)
    assert str(path) in message and "download it again" in message
    assert "\n" not in message


def test_idx_corrupted_gzip(tmp_path: Path) -> None:
    payload = bytearray(gzip.compress(idx_bytes(np.zeros((5, 28, 28), np.uint8))))
    payload[len(payload) // 2] ^= 0xFF  # flip one byte inside the deflate stream
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(payload))

    with pytest.raises(DataFileError, match="corrupt.gz"):
        read_idx(path)


@pytest.mark.parametrize(
    ("cut", "problem"), [(-10, "truncated"), (+7, "trailing bytes")], ids=["short", "long"]
)
def test_idx_payload_size_must_match_header(tmp_path: Path, cut: int, problem: str) -> None:
    data = idx_bytes(np.ones((4, 28, 28), np.uint8))
    data = data[:cut] if cut < 0 else data + b"\x00" * cut
    path = _write_raw_idx(tmp_path, data)

    with pytest.raises(DataFileError, match=problem) as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "header",
    [b"\x01\x02\x08\x03", b"\x00\x00\x0d\x03", b"\x00\x00"],
    ids=["bad-magic", "float-type", "short-header"],
)
def test_idx_bad_header(tmp_path: Path, header: bytes) -> None:
    good = idx_bytes(np.ones((4, 28, 28), np.uint8))
    path = _write_raw_idx(tmp_path, header + good[len(header) :] if len(header) == 4 else header)

    with pytest.raises(DataFileError) as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


def test_idx_labels_out_of_range(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, n_train=24, n_test=12, num_classes=12)  # mnist has 10

    with pytest.raises(DataFileError, match="labels range 0..11") as caught:
        load_dataset("mnist", tmp_path, download=False)
    assert IDX_STEMS["train_labels"] in str(caught.value)


def test_idx_image_and_label_counts_must_match(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, n_train=30, n_test=10)
    write_idx_dataset(tmp_path / "other", n_train=20, n_test=10)
    labels_file = f"{IDX_STEMS['train_labels']}.gz"
    shutil.copy(tmp_path / "other" / labels_file, tmp_path / labels_file)

    with pytest.raises(DataFileError, match="20 labels for 30 images") as caught:
        load_dataset("mnist", tmp_path, download=False)
    assert labels_file in str(caught.value)


def test_idx_image_shape_must_match_spec(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, n_train=20, n_test=10, shape=(32, 32))

    with pytest.raises(DataFileError, match=r"\(1, 28, 28\)"):
        load_dataset("fashion_mnist", tmp_path, download=False)


# -------------------------------------------------------------------------- CIFAR


def test_cifar10_directory_and_tarball_give_identical_arrays(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path / "dir", n_per_batch=10)
    write_cifar10(tmp_path / "tar", n_per_batch=10, as_tarball=True)

    from_dir = load_dataset("cifar10", tmp_path / "dir", download=False)
    from_tar = load_dataset("cifar10", tmp_path / "tar", download=False)

    assert from_dir.train_images.shape == (50, 3, 32, 32)
    assert from_dir.test_images.shape == (10, 3, 32, 32)
    assert_splits_equal(from_dir, written)
    assert_splits_equal(from_tar, written)
    assert locate("cifar10", tmp_path / "tar", False) == tmp_path / "tar/cifar-10-python.tar.gz"
    assert locate("cifar10", tmp_path / "dir", False) == tmp_path / "dir/cifar-10-batches-py"


@pytest.mark.parametrize("as_tarball", [False, True], ids=["dir", "tar"])
def test_cifar100_fine_and_coarse_labels(tmp_path: Path, as_tarball: bool) -> None:
    written = write_cifar100(tmp_path, n=200, as_tarball=as_tarball)

    loaded = load_dataset("cifar100", tmp_path, download=False)
    source = locate("cifar100", tmp_path, download=False)
    _, coarse = read_cifar(source, ["train"], "coarse_labels")

    assert_splits_equal(loaded, written)
    assert set(loaded.train_labels) == set(range(100))
    np.testing.assert_array_equal(coarse, cifar100_coarse_labels(written.train_labels))


def test_cifar_planar_layout(tmp_path: Path) -> None:
    data = np.zeros((2, 3072), np.uint8)
    pixel = 3 * 32 + 5  # row 3, col 5 in a row-major 32x32 plane
    data[0, [pixel, 1024 + pixel, 2048 + pixel]] = (200, 100, 50)
    batch = {b"data": data, b"labels": [0, 1]}
    (tmp_path / "data_batch_1").write_bytes(py2_pickle_bytes(batch))

    images, labels = read_cifar(tmp_path, ["data_batch_1"], "labels")

    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8
    assert tuple(images[0, :, 3, 5]) == (200, 100, 50)
    assert int(images.sum()) == 350  # nothing landed anywhere else
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_pickles_written_by_python3_load_at_every_protocol(tmp_path: Path, protocol: int) -> None:
    # Protocol 2 rebuilds bytes with _codecs.encode, protocol 5 arrays with numpy's _frombuffer.
    data = np.arange(3 * 3072, dtype=np.int64).reshape(3, 3072).astype(np.uint8)
    batch = {"data": data, "labels": [1, 2, 3], "batch_label": b"testing batch 1 of 1", "filenames": [b"a.png"] * 3}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))

    images, labels = read_cifar(tmp_path, ["test_batch"], "labels")
    assert labels.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(images.reshape(3, 3072), data)


def test_codecs_encode_is_admitted_only_for_latin1_bytes(tmp_path: Path) -> None:
    # A protocol-2 pickle asking _codecs.encode for another codec: refused, not decoded.
    payload = b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00hiX\x05\x00\x00\x00rot13\x86R."
    assert pickle.loads(payload) == "uv"  # what plain pickle does with it
    (tmp_path / "test_batch").write_bytes(payload)
    with pytest.raises(DataFileError, match="corrupted pickle.*rot13"):
        read_cifar(tmp_path, ["test_batch"], "labels")


def test_cifar_numpy1_pickles_load_without_deprecation_warnings(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path, n_per_batch=4)
    batch_file = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    assert b"numpy.core.multiarray\n_reconstruct" in batch_file.read_bytes()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images, _ = read_cifar(batch_file.parent, ["data_batch_1"], "labels")
    np.testing.assert_array_equal(images, written.train_images[:4])


class _CallsPrint:
    def __reduce__(self) -> tuple:
        return (builtins.print, ("pwned by pickle",))


def _os_system_pickle() -> bytes:
    # Hand-written protocol-2 pickle: GLOBAL os.system, then call it with one str.
    command = b"echo pwned"
    return b"\x80\x02cos\nsystem\nX" + len(command).to_bytes(4, "little") + command + b"\x85R."


def test_restricted_unpickler_rejects_os_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args))
    payload = _os_system_pickle()
    pickle.loads(payload)  # the payload really does call os.system (here: the stub)
    assert calls == [("echo pwned",)]
    calls.clear()
    (tmp_path / "data_batch_1").write_bytes(payload)

    with pytest.raises(DataFileError, match="forbidden global os.system") as caught:
        read_cifar(tmp_path, ["data_batch_1"], "labels")
    assert str(tmp_path / "data_batch_1") in str(caught.value)
    assert calls == []


def test_restricted_unpickler_rejects_nested_global(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = {"data": _CallsPrint(), "labels": [0]}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))

    with pytest.raises(DataFileError, match="builtins.print") as caught:
        read_cifar(tmp_path, ["test_batch"], "labels")
    assert "test_batch" in str(caught.value)
    assert "pwned" not in capsys.readouterr().out


def test_cifar_wrong_shape_names_file(tmp_path: Path) -> None:
    batch = cifar_batch(np.zeros((2, 3, 16, 16), np.uint8), {"labels": np.array([0, 1])}, "x")
    (tmp_path / "data_batch_1").write_bytes(py2_pickle_bytes(batch))

    with pytest.raises(DataFileError, match=r"\(N, 3072\)") as caught:
        read_cifar(tmp_path, ["data_batch_1"], "labels")
    assert str(tmp_path / "data_batch_1") in str(caught.value)


def test_cifar_missing_file_and_member(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "dir", n_per_batch=2)
    write_cifar10(tmp_path / "tar", n_per_batch=2, as_tarball=True)

    with pytest.raises(DataFileError, match="data_batch_9"):
        read_cifar(tmp_path / "dir" / "cifar-10-batches-py", ["data_batch_9"], "labels")
    with pytest.raises(DataFileError, match="no member data_batch_9"):
        read_cifar(tmp_path / "tar" / "cifar-10-python.tar.gz", ["data_batch_9"], "labels")


def test_cifar_truncated_tarball(tmp_path: Path) -> None:
    write_cifar10(tmp_path, n_per_batch=10, as_tarball=True)
    tarball = tmp_path / "cifar-10-python.tar.gz"
    tarball.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])

    with pytest.raises(DataFileError, match="download it again") as caught:
        load_dataset("cifar10", tmp_path, download=False)
    assert str(tarball) in str(caught.value)


# ------------------------------------------------------------------------ catalog


def test_catalog_entries() -> None:
    assert set(DATASETS) == {"mnist", "fashion_mnist", "cifar10", "cifar100", "digits"}
    expected = {
        "mnist": ((1, 28, 28), 10),
        "fashion_mnist": ((1, 28, 28), 10),
        "cifar10": ((3, 32, 32), 10),
        "cifar100": ((3, 32, 32), 100),
        "digits": ((1, 8, 8), 10),
    }
    for name, (in_shape, num_classes) in expected.items():
        assert (DATASETS[name].in_shape, DATASETS[name].num_classes) == (in_shape, num_classes)
    fine = DATASETS["cifar100"].class_names
    assert list(fine) == sorted(set(fine))  # official order is alphabetical, no duplicates
    assert DATASETS["fashion_mnist"].class_names[9] == "Ankle boot"


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(ConfigError, match="data.name: unknown dataset 'imagenet'") as caught:
        load_dataset("imagenet", None, download=False)
    assert "cifar10, cifar100, digits, fashion_mnist, mnist" in str(caught.value)


@pytest.fixture
def system_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point fashion_mnist's system location at a temporary directory."""
    directory = tmp_path / "system"
    spec = dataclasses.replace(DATASETS["fashion_mnist"], system_dirs=(directory,))
    monkeypatch.setitem(DATASETS, "fashion_mnist", spec)
    return directory


def test_root_wins_over_system_dir(tmp_path: Path, system_dir: Path) -> None:
    root = tmp_path / "root"
    written = write_idx_dataset(root, n_train=30, n_test=10, gz=False)
    write_idx_dataset(system_dir, n_train=20, n_test=10, seed=7)

    assert locate("fashion_mnist", root, download=False) == root
    assert_splits_equal(load_dataset("fashion_mnist", root, download=False), written)


def test_system_dir_used_when_root_incomplete(tmp_path: Path, system_dir: Path) -> None:
    root = tmp_path / "root"
    write_idx_dataset(root, n_train=30, n_test=10)
    (root / f"{IDX_STEMS['test_labels']}.gz").unlink()  # root lacks one file
    written = write_idx_dataset(system_dir, n_train=20, n_test=10, seed=7)

    assert locate("fashion_mnist", root, download=False) == system_dir
    assert_splits_equal(load_dataset("fashion_mnist", root, download=False), written)


def test_nothing_found_without_download(tmp_path: Path, system_dir: Path) -> None:
    root = tmp_path / "root"

    with pytest.raises(DataNotFoundError) as caught:
        load_dataset("fashion_mnist", root, download=False)
    message = str(caught.value)
    assert "'fashion_mnist'" in message
    assert str(root) in message and str(system_dir) in message
    assert "data.download=true" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "\n" not in message
    assert not root.exists()  # looking must not create anything


@pytest.mark.parametrize(
    "error",
    [requests.exceptions.ConnectionError("Name or service not known"), OSError("unreachable")],
    ids=["ConnectionError", "OSError"],
)
def test_offline_download(
    tmp_path: Path, system_dir: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def offline(url: str, **kwargs: object) -> str:
        raise error

    monkeypatch.setattr(pooch, "retrieve", offline)

    with pytest.raises(DataNotFoundError) as caught:
        load_dataset("fashion_mnist", tmp_path, download=True)
    message = str(caught.value)
    assert type(error).__name__ in message and str(error) in message
    assert str(tmp_path) in message and str(system_dir) in message
    assert "http://fashion-mnist" in message


def _serve(monkeypatch: pytest.MonkeyPatch, payloads: dict[str, bytes]) -> list[str]:
    """Make pooch 'download' from `payloads` (url -> bytes); return the urls fetched."""
    fetched: list[str] = []

    def downloader(url: str, output_file: str, pooch_obj: object) -> None:
        fetched.append(url)
        Path(output_file).write_bytes(payloads[url])

    monkeypatch.setattr(pooch.core, "choose_downloader", lambda url, progressbar=False: downloader)
    return fetched


def test_download_checksum_mismatch(
    tmp_path: Path, system_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = DATASETS["fashion_mnist"]
    _serve(monkeypatch, {remote.url: b"<html>captive portal</html>" for remote in spec.downloads})
    root = tmp_path / "root"

    with pytest.raises(DataFileError, match="SHA256") as caught:
        load_dataset("fashion_mnist", root, download=True)
    assert str(root / spec.downloads[0].fname) in str(caught.value)
    assert not (root / spec.downloads[0].fname).exists()


def test_download_then_reuse(
    tmp_path: Path, system_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = write_idx_dataset(tmp_path / "server", n_train=20, n_test=10)
    spec = DATASETS["fashion_mnist"]
    payloads, remotes = {}, []
    for remote in spec.downloads:
        data = (tmp_path / "server" / remote.fname).read_bytes()
        payloads[remote.url] = data
        remotes.append(RemoteFile(remote.url, hashlib.sha256(data).hexdigest()))
    monkeypatch.setitem(DATASETS, "fashion_mnist", dataclasses.replace(spec, downloads=tuple(remotes)))
    fetched = _serve(monkeypatch, payloads)
    root = tmp_path / "root"

    assert_splits_equal(load_dataset("fashion_mnist", root, download=True), written)
    assert sorted(fetched) == sorted(payloads)
    fetched.clear()
    assert locate("fashion_mnist", root, download=True) == root
    assert fetched == []  # found in root: no second download


# ------------------------------------------------------------------------- digits


def test_digits_shapes_range_and_deterministic_split() -> None:
    first = load_dataset("digits", None, download=False)
    second = load_dataset("digits", None, download=False)

    assert first.train_images.shape == (1438, 1, 8, 8)
    assert first.test_images.shape == (359, 1, 8, 8)
    assert first.train_images.dtype == np.uint8 and first.train_labels.dtype == np.int64
    assert first.train_images.min() == 0 and first.train_images.max() == 255
    assert set(first.test_labels) == set(range(10))
    assert_splits_equal(first, second)
    # The split is shuffled, not the first 80% of scikit-learn's (class-cycling) order.
    assert not np.array_equal(first.test_labels[:20], np.arange(20) % 10)
    assert catalog.locate("digits", None, download=False).name == "digits.csv.gz"


# ------------------------------------------------------------- real Fashion-MNIST


@pytest.mark.skipif(not FASHION_SYSTEM_FILE.exists(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist(tmp_path: Path) -> None:
    splits = load_dataset("fashion_mnist", tmp_path, download=False)

    assert splits.train_images.shape == (60000, 1, 28, 28)
    assert splits.test_images.shape == (10000, 1, 28, 28)
    assert splits.train_images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(splits.train_labels, minlength=10), [6000] * 10)
    assert set(splits.test_labels) == set(range(10))
