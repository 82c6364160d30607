"""Shards: a dataset's splits as WebDataset tar files of uint8 images at their stored size, and a manifest.

    OUT/manifest.json                   what the shards hold (written last: a folder without one is not done)
    OUT/train-000000.tar, ...           each sample: <key>.npy (uint8 C x H x W), <key>.cls (the label)
    OUT/val-000000.tar, OUT/test-000000.tar

The splits are drawn as training draws them (imgrec.data.splits: the source's own, or drawn by data.split_seed),
the training images in an order drawn by the split seed (so that every shard holds every class), validation and
test images in their order. The manifest holds the class names, the image shape and preprocessing, the training
split's pixel statistics (the network's normalization), the splits' shards and counts, the source and its
digest, and the digest of all that decided the shards' contents: writing again what is already written rewrites
nothing. WebDataset writes and reads the tar files (any tool that reads WebDataset reads them); fsspec carries them
to and from a folder or any store (imgrec.data.remote).
"""

import hashlib
import io
import json
import logging
import math
import multiprocessing
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
import torch

from imgrec.data import remote
from imgrec.errors import DataFileError, DataNotFoundError

log = logging.getLogger("imgrec")

FORMAT = "imgrec-shards/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
REQUIRED = ("contents", "class_names", "image_shape", "preprocess", "normalization", "splits", "source")


@dataclass(frozen=True)
class Manifest:
    uri: str
    entry: dict

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.entry["class_names"])

    def shards(self, split: str) -> list[tuple[str, int]]:
        """(URI, sample count) of each shard of `split`."""
        return [(remote.join(self.uri, s["name"]), s["count"]) for s in self.entry["splits"][split]["shards"]]

    def count(self, split: str) -> int:
        return self.entry["splits"][split]["count"]


def read_manifest(uri: str, storage_options: dict | None = None, retries: int = 3) -> Manifest:
    """The manifest of the shards at `uri`, checked; one line when there is none, or one this imgrec cannot read."""
    where = remote.join(uri, MANIFEST)
    try:
        text = remote.read_bytes(where, storage_options, retries)
    except remote.StoreRefused as err:
        if "no such file" in str(err):
            raise DataNotFoundError(f"data.uri: {uri} holds no {MANIFEST}: not shards imgrec wrote (write them with "
                                    f"imgrec shard data=<source> out={uri})") from None
        raise
    try:
        entry = json.loads(text)
    except ValueError:
        raise DataFileError(f"data.uri: {where} is not JSON: not a manifest imgrec shard wrote") from None
    found = entry.get("format") if isinstance(entry, dict) else None
    if found != FORMAT:
        raise DataFileError(f"data.uri: {uri} was written by another version of imgrec shard (format {found!r}; this "
                            f"imgrec reads {FORMAT!r}): shard the data again")
    missing = [key for key in REQUIRED if key not in entry] or [
        f"splits.{name}.class_counts" for name in SPLITS if "class_counts" not in entry["splits"].get(name, {})]
    if missing:
        raise DataFileError(f"data.uri: {uri}'s manifest lacks {', '.join(missing)} (an earlier imgrec shard wrote it): "
                            "shard the data again")
    return Manifest(str(uri).rstrip("/"), entry)


# -- writing ---------------------------------------------------------------------------------------------------

def sample_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(image), allow_pickle=False)
    return buffer.getvalue()


def plan(splits, shard_mb: float, min_shards: int, seed: int) -> dict[str, list[torch.Tensor]]:
    """Each split's rows, cut into shards of about `shard_mb` (at least `min_shards` for training, so that ranks and
    loader workers each have some); the training rows in an order drawn by `seed`."""
    cut = {}
    for name in SPLITS:
        split = getattr(splits, name)
        rows = torch.arange(len(split))
        if name == "train":
            rows = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
        per_image = math.prod(split.images.shape[1:]) + 2048  # the array, its header and two tar members
        count = max(1, math.ceil(len(split) * per_image / (shard_mb * 2**20)))
        if name == "train":
            count = max(count, min(min_shards, len(split)))
        cut[name] = list(torch.tensor_split(rows, count))
    return cut


_work: tuple = ()  # (the splits, the output URI, storage options), inherited by forked writers


def _write_shard(task: tuple[str, int, torch.Tensor]) -> tuple[str, int, str, int]:
    """(split, index, name, samples) of one shard written."""
    from webdataset import TarWriter

    arrays, out, storage_options = _work
    name, index, rows = task
    images, positions, labels = arrays[name]
    shard = f"{name}-{index:06d}.tar"
    with remote.open_for_writing(remote.join(out, shard), storage_options) as handle, TarWriter(handle, mtime=0) as tar:  # a whole mtime: no pax header
        for row in rows.tolist():
            image = images[positions[row]]
            tar.write({"__key__": f"{row:09d}", "npy": sample_bytes(image), "cls": str(int(labels[row])).encode()})
    return name, index, shard, len(rows)


def write(datamodule, out: str, source_config: dict, storage_options: dict | None = None, shard_mb: float = 100,
          min_shards: int = 8, workers: int = 1) -> tuple[dict, bool]:
    """The loaded datamodule's splits as shards at `out`; (the manifest, whether anything was written). A manifest
    there with the same contents digest (the source, its splits and decoding, the shard plan) means they are
    already written: nothing is."""
    splits, source = datamodule.splits, datamodule.source()
    settings = {"source": source.digest, "data": source_config, "shard_mb": shard_mb, "min_shards": min_shards}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    try:
        existing = read_manifest(out, storage_options, retries=1)
    except (DataNotFoundError, DataFileError):
        existing = None
    if existing is not None and existing.entry.get("contents") == digest and _all_there(existing, storage_options):
        return existing.entry, False
    shards = plan(splits, shard_mb, min_shards, datamodule.split_seed)
    tasks = [(name, index, rows) for name in SPLITS for index, rows in enumerate(shards[name])]
    written: dict[str, list] = {name: [None] * len(shards[name]) for name in SPLITS}
    start = time.perf_counter()
    # numpy, not torch, in the forked writers: a child forked after torch's OpenMP threads ran deadlocks in them
    arrays = {name: tuple(t.numpy() for t in (getattr(splits, name).images, getattr(splits, name).positions,
                                               getattr(splits, name).labels)) for name in SPLITS}
    for name, index, shard, count in _parallel(tasks, (arrays, out, storage_options), workers,
                                               sum(len(s) for s in (splits.train, splits.val, splits.test))):
        written[name][index] = {"name": shard, "count": count}
    seconds = time.perf_counter() - start
    mean, std = splits.normalization.stats()
    manifest = {
        "format": FORMAT, "contents": digest, "class_names": list(splits.class_names),
        "image_shape": list(splits.train.images.shape[1:]), "preprocess": splits.preprocess.to_dict(),
        "normalization": {"mean": mean, "std": std}, "split_seed": datamodule.split_seed,
        "source": {"name": source.name, "uri": source.uri, "digest": source.digest},
        "splits": {name: {"count": sum(s["count"] for s in written[name]), "shards": written[name],
                          "class_counts": torch.bincount(getattr(splits, name).labels,
                                                         minlength=len(splits.class_names)).tolist()}
                   for name in SPLITS},
        "data": source_config, "written": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(seconds, 2),
    }
    remote.write_bytes(remote.join(out, MANIFEST), json.dumps(manifest, indent=1, ensure_ascii=False).encode(),
                       storage_options)
    return manifest, True


def _all_there(manifest: Manifest, storage_options: dict | None) -> bool:
    return all(remote.size(uri, storage_options) for name in SPLITS for uri, _ in manifest.shards(name))


def _parallel(tasks: list, work: tuple, workers: int, images: int) -> Iterator[tuple]:
    """`_write_shard` over `tasks` in forked worker processes (several), with a progress bar in images on a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    global _work
    _work = work
    columns = (TextColumn("writing shards"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn())
    with Progress(*columns, disable=not sys.stderr.isatty(), transient=True) as progress:
        bar, start = progress.add_task("shards", total=images, rate=""), time.perf_counter()

        def advance(count: int) -> None:
            progress.advance(bar, count)
            progress.update(bar, rate=f"{progress.tasks[0].completed / max(time.perf_counter() - start, 1e-9):,.0f} img/s")

        if workers <= 1 or len(tasks) == 1:
            for task in tasks:
                done = _write_shard(task)
                advance(done[3])
                yield done
            return
        context = multiprocessing.get_context("fork")  # the splits are inherited, not pickled (imgrec.data.cache)
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context) as pool:
            for future in as_completed([pool.submit(_write_shard, task) for task in tasks]):
                done = future.result()
                advance(done[3])
                yield done


# -- reading ---------------------------------------------------------------------------------------------------

def samples(uri: str, copies: remote.LocalCopies) -> Iterator[tuple[np.ndarray, int]]:
    """(uint8 C x H x W image, label) of every sample of one shard, in order; one line for a shard that is truncated
    or not a tar file."""
    import tarfile

    path = copies.path(uri)
    try:
        data = path.read_bytes()
        members = _ustar_members(data)
        if members is None:  # pax or GNU headers (another tar writer): WebDataset's reader, which parses them all
            members = _members_by_webdataset(data, uri)
        key, image, label = None, None, None
        for name, payload in members:
            stem, _, extension = name.rpartition(".")
            if stem != key:
                if image is not None and label is not None:
                    yield image, label
                key, image, label = stem, None, None
            if extension == "npy":
                image = _npy(payload)
            elif extension == "cls":
                label = int(payload)
        if image is not None and label is not None:
            yield image, label
    except (tarfile.TarError, EOFError, ValueError, KeyError, OSError) as err:
        if not remote.is_local(uri):
            path.unlink(missing_ok=True)  # not kept: the next try downloads it again
        raise DataFileError(f"data.uri: the shard {uri} is truncated or damaged ({type(err).__name__}: "
                            f"{str(err).splitlines()[0][:120] if str(err) else ''}): write the shards again "
                            "(imgrec shard)") from None


def _ustar_members(data: bytes) -> Iterator[tuple[str, bytes]] | None:
    """(name, bytes) of each member of a plain ustar archive, as imgrec shard writes them; None when the archive has
    other kinds of headers. Python's tarfile spends two thirds of a stream's time parsing headers (measured: 7,700
    img/s for 28-pixel images); slicing them here keeps the stream far ahead of training."""
    if len(data) >= 512 and data[156:157] not in (b"0", b"\0"):
        return None

    def members() -> Iterator[tuple[str, bytes]]:
        offset, end = 0, len(data)
        while offset + 512 <= end:
            header = data[offset : offset + 512]
            if header == bytes(512):  # the end-of-archive blocks
                return
            if header[257:262] != b"ustar" or header[156:157] not in (b"0", b"\0"):
                raise ValueError(f"an unexpected tar header at byte {offset}")
            name = header[:100].split(b"\0", 1)[0].decode()
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            start = offset + 512
            if start + size > end:
                raise EOFError(f"the archive ends inside {name}")
            yield name, data[start : start + size]
            offset = start + (size + 511) // 512 * 512
        raise EOFError("the archive ends without its end-of-archive blocks")

    return members()


def _members_by_webdataset(data: bytes, uri: str) -> Iterator[tuple[str, bytes]]:
    from webdataset.tariterators import tar_file_iterator

    for member in tar_file_iterator(io.BytesIO(data)):
        yield member["fname"], member["data"]


def _npy(payload: bytes) -> np.ndarray:
    """An .npy file's uint8 array from its bytes: the header read without numpy's literal parser (a third of the
    time numpy takes)."""
    if payload[:6] != b"\x93NUMPY":
        raise ValueError("not an .npy array")
    length = int.from_bytes(payload[8:10], "little") if payload[6] == 1 else int.from_bytes(payload[8:12], "little")
    start = (10 if payload[6] == 1 else 12) + length
    header = payload[start - length : start].decode("latin1")
    if "'|u1'" not in header or "'fortran_order': False" not in header:
        return np.load(io.BytesIO(payload), allow_pickle=False)
    shape = tuple(int(d) for d in header.split("'shape': (", 1)[1].split(")", 1)[0].split(",") if d.strip())
    return np.frombuffer(payload, dtype=np.uint8, offset=start).reshape(shape)
