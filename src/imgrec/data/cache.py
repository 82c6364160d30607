"""Decode once: the images of a folder or a HuggingFace dataset at their stored size, in one uint8 file on disk.

    <cache_dir>/<name>-<settings>/images.u8     (N, C, H, W) uint8, memory-mapped by every later run, rank and worker
                                 /labels.npy, parts.npy, listing.npz, meta.json

The folder's name is keyed by the source and the decode settings (image size, channels, crop fraction,
interpolation); `meta.json` holds the digest of the listing it was made from (every file's name, size and
modification time, or a HuggingFace dataset's fingerprint, with the labels and parts). A run whose listing has
another digest decodes again, and says what changed. The first run decodes in parallel worker processes with a
progress bar; a file that does not decode is left out (its row stays zero) and named in `meta.json`'s `bad`.

Workers are forked, not spawned: they only call Pillow and NumPy, and a fork inherits the listing instead of
pickling it to every worker (a spawned worker would also import imgrec and torch again, a second each).
"""

import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock

from imgrec.data.decode import Preprocess, Source, decode, probe
from imgrec.errors import ConfigError, DataFileError, one_line

log = logging.getLogger("imgrec")

PARTS = ("train", "val", "test")  # parts.npy codes: 0, 1, 2
FORMAT = 1  # meta.json's "format": a cache written by another layout is decoded again


@dataclass(frozen=True)
class Listing:
    """What a source holds, before decoding: one entry per image."""

    names: list[str]  # each image's name in messages: a path relative to the root, or "split[row]"
    labels: np.ndarray  # int64 (N,)
    parts: np.ndarray  # int8 (N,): an index into PARTS
    class_names: tuple[str, ...]
    reader: Callable[[int], Source]  # image i's file or bytes (picklable; forked workers call it)
    stamps: np.ndarray | None = None  # int64 (N, 2): size and mtime in ns of each file (a folder)
    fingerprint: str = ""  # what else identifies the content (a HuggingFace dataset's fingerprint)

    def digest(self) -> str:
        digest = hashlib.sha256(self.fingerprint.encode())
        digest.update("\0".join(self.names).encode())
        for array in (self.labels, self.parts, self.stamps):
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Settings:
    """The decode settings as configured: a None size or channel count is found from the images."""

    image_size: tuple[int, int] | None
    channels: int | None
    crop_fraction: float
    interpolation: str

    def key(self, source: str) -> str:
        text = json.dumps({"source": source, "image_size": self.image_size, "channels": self.channels,
                           "crop_fraction": self.crop_fraction, "interpolation": self.interpolation, "format": FORMAT})
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Decoded:
    """A cache, open: the images memory-mapped, and what they are."""

    folder: Path
    images: np.ndarray  # uint8 (N, C, H, W), memory-mapped (copy-on-write: writes never reach the file)
    labels: np.ndarray
    parts: np.ndarray
    class_names: tuple[str, ...]
    preprocess: Preprocess
    bad: list[list[str]] = field(default_factory=list)  # [name, why] of each image left out
    digest: str = ""

    def positions(self, part: str) -> np.ndarray:
        """The readable images of `part`, in listing order."""
        keep = self.parts == PARTS.index(part)
        if self.bad:
            keep &= self.readable
        return np.flatnonzero(keep)

    @property
    def readable(self) -> np.ndarray:
        readable = np.ones(len(self.labels), dtype=bool)
        readable[[int(i) for i, *_ in self.bad]] = False
        return readable


def open_or_build(listing: Listing, settings: Settings, source: str, cache_dir: Path, slug: str,
                  workers: int | None = None) -> Decoded:
    """The cache of `listing` decoded with `settings`: opened when its digest matches, (re)built otherwise.
    `source` identifies where the listing came from (a resolved folder, a dataset's path); `slug` names the folder."""
    folder = Path(cache_dir) / f"{slug}-{settings.key(source)}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    digest = listing.digest()
    with FileLock(str(folder) + ".lock"):  # one process builds; the others (ranks, sweep trials) wait, then open
        meta = _meta(folder)
        if meta is not None and meta.get("digest") == digest and meta.get("format") == FORMAT:
            return _open(folder, meta)
        if meta is not None:
            log.info("data: %s changed since its cache was made (%s): decoding again", source, _changes(folder, listing))
        _build(folder, listing, settings, source, digest, workers or os.cpu_count() or 1)
        return _open(folder, _meta(folder))


def _meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _open(folder: Path, meta: dict) -> Decoded:
    shape = tuple(meta["shape"])
    images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="c", shape=shape) if shape[0] else \
        np.zeros(shape, dtype=np.uint8)
    return Decoded(folder, images, np.load(folder / "labels.npy"), np.load(folder / "parts.npy"),
                   tuple(meta["class_names"]), Preprocess.from_dict(meta["preprocess"]), meta["bad"], meta["digest"])


def _changes(folder: Path, listing: Listing) -> str:
    """What differs between the listing a cache was made from and this one, in words."""
    try:
        old = np.load(folder / "listing.npz")
    except (OSError, ValueError):
        return "its listing is unreadable"
    if listing.stamps is None or "stamps" not in old:
        return "its fingerprint"
    before = dict(zip(old["names"].tolist(), map(tuple, old["stamps"].tolist())))
    after = dict(zip(listing.names, map(tuple, listing.stamps.tolist())))
    added, removed = len(after.keys() - before.keys()), len(before.keys() - after.keys())
    changed = sum(before[name] != stamp for name, stamp in after.items() if name in before)
    if not (added or removed or changed):
        return "the same files with other labels or splits"
    return f"{added} file{'s' * (added != 1)} added, {changed} changed, {removed} removed"


def _build(folder: Path, listing: Listing, settings: Settings, source: str, digest: str, workers: int) -> None:
    n = len(listing.names)
    if n == 0:
        raise DataFileError(f"data.root: {source} holds no images")
    bad: dict[int, str] = {}
    preprocess = _resolve(listing, settings, source, bad, workers)
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    shape = (n, preprocess.channels, *preprocess.stored_size)
    with open(building / "images.u8", "wb") as handle:
        handle.truncate(math.prod(shape))
    start = time.perf_counter()
    todo = [i for i in range(n) if i not in bad]
    for index, why in _parallel(_decode_rows, todo, workers, f"decoding {n:,} images",
                                (listing.reader, listing.names, str(building / "images.u8"), shape, preprocess)):
        bad[index] = why
    seconds = time.perf_counter() - start
    log.info("data: decoded %s images of %s in %.1f s (%.0f img/s, %d process%s) into %s", f"{len(todo):,}", source,
             seconds, len(todo) / max(seconds, 1e-9), min(workers, max(1, len(todo))), "es" if workers > 1 else "",
             folder)
    np.save(building / "labels.npy", listing.labels.astype(np.int64))
    np.save(building / "parts.npy", listing.parts.astype(np.int8))
    np.savez_compressed(building / "listing.npz", names=np.array(listing.names, dtype=str),
                        **({"stamps": listing.stamps} if listing.stamps is not None else {}))
    meta = {"format": FORMAT, "source": source, "digest": digest, "shape": list(shape),
            "class_names": list(listing.class_names), "preprocess": preprocess.to_dict(),
            "bad": [[i, listing.names[i], why] for i, why in sorted(bad.items())], "made": time.strftime("%F %T")}
    (building / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    shutil.rmtree(folder, ignore_errors=True)
    building.rename(folder)


def _resolve(listing: Listing, settings: Settings, source: str, bad: dict[int, str], workers: int) -> Preprocess:
    """The settings with the image size and channel count found from the images' headers where not given."""
    size, channels = settings.image_size, settings.channels
    if size is None or channels is None:
        seen: dict[int, tuple[int, int, bool]] = {}
        for index, result in _parallel(_probe_rows, list(range(len(listing.names))), workers,
                                       f"reading {len(listing.names):,} image headers", (listing.reader, listing.names)):
            if isinstance(result, str):
                bad[index] = result
            else:
                seen[index] = result
        if not seen:
            raise DataFileError(f"data.root: none of the {len(listing.names):,} images of {source} can be read "
                                f"(the first: {listing.names[0]}: {bad.get(0, '?')})")
        if size is None:
            size = _one_size(Counter((h, w) for h, w, _ in seen.values()))
        if channels is None:
            channels = 1 if all(gray for *_, gray in seen.values()) else 3
    return Preprocess(size, channels, settings.crop_fraction, settings.interpolation)


def _one_size(sizes: Counter) -> tuple[int, int]:
    if len(sizes) == 1:
        return next(iter(sizes))
    shorter = sorted(min(h, w) for (h, w), count in sizes.items() for _ in range(count))
    suggestion = max(16, min(224, shorter[len(shorter) // 2]) // 16 * 16)
    common = ", ".join(f"{h}x{w} ({count})" for (h, w), count in sizes.most_common(4))
    more = f" and {len(sizes) - 4} more sizes" if len(sizes) > 4 else ""
    raise ConfigError(f"data.image_size: the images differ in size (height x width: {common}{more}); set it, e.g. "
                      f"data.image_size={suggestion} (the median shorter side, at most 224) or data.image_size=[h,w]")


# -- parallel work over rows: forked workers, a progress bar ---------------------------------------------------

_work: tuple = ()  # what every worker needs, set before forking (inherited) or in this process


def _set_work(work: tuple) -> None:
    global _work
    _work = work


def _probe_rows(rows: list[int]) -> list[tuple[int, tuple | str]]:
    reader, names = _work
    found = []
    for i in rows:
        try:
            found.append((i, probe(reader(i), names[i])))
        except (DataFileError, OSError) as err:
            found.append((i, _why(err, names[i])))
    return found


def _decode_rows(rows: list[int]) -> list[tuple[int, str]]:
    """Decode `rows` into the cache file; (row, why) of each that failed."""
    reader, names, path, shape, preprocess = _work
    images = np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)
    failed = []
    for i in rows:
        try:
            images[i] = decode(reader(i), preprocess, names[i])
        except (DataFileError, OSError) as err:
            failed.append((i, _why(err, names[i])))
    images.flush()
    return failed


def _why(err: Exception, name: str) -> str:
    """Why an image failed, without its name (said beside it) or the folders of paths quoted in Pillow's words."""
    return re.sub(r"'/[^']*/([^'/]+)'", r"'\1'", one_line(err).removeprefix(f"{name}: "))


def _parallel(function: Callable[[list[int]], list], rows: list[int], workers: int, description: str,
              work: tuple) -> Iterator:
    """Every result of `function` over chunks of `rows`, in worker processes when there are several, with a progress
    bar and its rate on a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    _set_work(work)
    size = max(8, min(512, math.ceil(len(rows) / (max(workers, 1) * 8))))
    chunks = [rows[start : start + size] for start in range(0, len(rows), size)]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    with Progress(*columns, disable=not sys.stderr.isatty(), transient=True) as progress:
        task = progress.add_task(description, total=len(rows), rate="")
        start = time.perf_counter()

        def advance(count: int) -> None:
            progress.advance(task, count)
            done = progress.tasks[0].completed
            progress.update(task, rate=f"{done / max(time.perf_counter() - start, 1e-9):,.0f} img/s")

        if workers <= 1 or len(chunks) == 1:
            for chunk in chunks:
                yield from function(chunk)
                advance(len(chunk))
            return
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context) as pool:
            futures = {pool.submit(function, chunk): len(chunk) for chunk in chunks}
            for future in as_completed(futures):
                yield from future.result()
                advance(futures[future])
