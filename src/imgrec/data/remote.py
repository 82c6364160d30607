"""Files on a local path or any fsspec store (s3://, gs://, http(s)://, az://, ...): read and written with retries
and backoff on transient failures, every failure said in one line naming the URI, and remote files kept in a
bounded local cache.

Credentials and endpoints come from the store's standard environment (AWS_ENDPOINT_URL, AWS_PROFILE,
AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...) or from `storage_options` (fsspec's keyword arguments,
data.storage_options), which imgrec.tracking.secrets keeps out of every tracked record.
"""

import logging
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import fsspec

from imgrec.errors import DataFileError, DataNotFoundError, one_line

log = logging.getLogger("imgrec")
T = TypeVar("T")
BACKOFF_S = 1.0  # the first wait; each further try waits twice as long


class StoreRefused(DataNotFoundError):
    """The store answered, and the answer is no (no such bucket or key, credentials refused): not worth retrying."""


def is_local(uri: str) -> bool:
    return "://" not in str(uri) or str(uri).startswith("file://")


def join(uri: str, name: str) -> str:
    return f"{str(uri).rstrip('/')}/{name}"


def filesystem(uri: str, storage_options: dict | None = None):
    """(the fsspec filesystem, the path in it) of `uri`."""
    return fsspec.core.url_to_fs(str(uri), **(storage_options or {}))


def transient(err: BaseException) -> bool:
    """Whether a failure may pass on a retry: a connection refused or reset, a timeout, a 5xx; not a missing file,
    refused credentials or a malformed request."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError)):
        return False
    return isinstance(err, (OSError, ConnectionError, TimeoutError)) or type(err).__module__.startswith(
        ("botocore", "aiohttp", "urllib3", "requests", "google"))


def refusal(err: BaseException, uri: str) -> StoreRefused:
    """A permanent failure in one line that says what to do."""
    text = one_line(err)
    if isinstance(err, PermissionError) or any(word in text for word in ("AccessDenied", "InvalidAccessKeyId",
                                                                          "SignatureDoesNotMatch", "Forbidden")):
        return StoreRefused(f"data.uri: the store refused the credentials for {uri} ({text[:160]}); set them in the "
                            "environment (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ...) or in "
                            "data.storage_options")
    if "bucket does not exist" in text or "NoSuchBucket" in text:
        return StoreRefused(f"data.uri: no such bucket for {uri} ({text[:160]})")
    if isinstance(err, FileNotFoundError):
        return StoreRefused(f"data.uri: no such file {uri}")
    return StoreRefused(f"data.uri: {uri}: {type(err).__name__}: {text[:200]}")


def with_retries(action: Callable[[], T], uri: str, retries: int) -> T:
    """`action()`, tried again after a transient failure up to `retries` times with exponential backoff; then, or
    after a permanent failure, one line naming `uri`."""
    wait, started = BACKOFF_S, time.monotonic()
    for attempt in range(retries + 1):
        try:
            return action()
        except (DataFileError, DataNotFoundError):
            raise
        except Exception as err:  # noqa: BLE001 - every store has its own exceptions: classified here
            if not transient(err):
                raise refusal(err, uri) from None
            if attempt == retries:
                raise DataNotFoundError(
                    f"data.uri: {uri} unreachable after {retries + 1} tries over {time.monotonic() - started:.0f} s "
                    f"({type(err).__name__}: {one_line(err)[:160]}); when it is back, resume with ckpt_path=last"
                ) from None
            log.warning("data: %s failed (%s: %s); trying again in %.0f s", uri, type(err).__name__,
                        one_line(err)[:120], wait)
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


def read_bytes(uri: str, storage_options: dict | None = None, retries: int = 3) -> bytes:
    def read() -> bytes:
        fs, path = filesystem(uri, storage_options)
        return fs.cat_file(path)

    return with_retries(read, uri, retries)


def write_bytes(uri: str, data: bytes, storage_options: dict | None = None, retries: int = 3) -> None:
    def write() -> None:
        fs, path = filesystem(uri, storage_options)
        if is_local(uri):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        fs.pipe_file(path, data)

    with_retries(write, uri, retries)


@contextmanager
def open_for_writing(uri: str, storage_options: dict | None = None):
    """A binary file to write at `uri` (a local file appears whole, renamed into place when closed)."""
    if is_local(uri):
        path = Path(uri.removeprefix("file://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        with open(partial, "wb") as handle:
            yield handle
        partial.replace(path)
        return
    with fsspec.open(uri, "wb", **(storage_options or {})) as handle:
        yield handle


def size(uri: str, storage_options: dict | None = None) -> int | None:
    """The file's size in bytes, None when it is not there."""
    try:
        fs, path = filesystem(uri, storage_options)
        return int(fs.size(path))
    except FileNotFoundError:
        return None


class LocalCopies:
    """Remote files copied into `folder` before they are read, the copies kept below `limit` bytes (least recently
    used removed first: webdataset's LRUCleanup); local files are read where they are."""

    def __init__(self, folder: str | Path, limit: int, storage_options: dict | None = None, retries: int = 5):
        from webdataset.cache import LRUCleanup

        self.folder, self.storage_options, self.retries = Path(folder), storage_options, retries
        self.cleanup = LRUCleanup(str(self.folder), limit, interval=None)

    def path(self, uri: str) -> Path:
        if is_local(uri):
            return Path(uri.removeprefix("file://"))
        fs, remote = filesystem(uri, self.storage_options)
        local = self.folder / remote.replace("/", "__")
        if not local.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self.cleanup.cleanup()
            partial = local.with_name(f".{local.name}.{os.getpid()}.partial")
            with_retries(lambda: fs.get_file(remote, str(partial)), uri, self.retries)
            partial.replace(local)
        os.utime(local)  # used now: the last to go
        return local


def parse_size(value: Any) -> int:
    """A byte count from 10_000_000, "10GB", "500 MB" or "2GiB"."""
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip().upper().replace(" ", "")
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9,
             "TB": 10**12, "B": 1}
    for unit, factor in units.items():
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return int(float(text[: -len(unit)]) * factor)
    if text.isdigit():
        return int(text)
    raise ValueError(f"not a size: {value!r} (e.g. 10GB, 500MB, 2GiB or a number of bytes)")
