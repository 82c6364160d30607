"""Tracking that outlives a tracking server's outage: a run's writes to a remote `mlflow server` go through a
queue that a background thread sends, in order, so training never waits on the network.

While the server is unreachable (refused connections, 5xx, timeouts) the sender keeps the writes and tries again
(every 1, 2, 4 ... 15 s); when the server is back it sends them all and the run carries on where it was: every
epoch's metrics, tags, checkpoints and artifacts, then its final status. MLflow's own HTTP retries (which block
the caller for minutes) are turned off for the run's process while the queue retries instead.

When the run ends with writes still unsent (the server did not come back within `wait_s`), they are kept in a
spool under the run's directory (`mlflow_spool/`: one JSON line per write, MLflow entities as their protobufs, the
files they upload copied beside), the console says so in one line, and `imgrec sync` (or the next run against
that server) sends them into the same run. A write the server refuses for good (an invalid value) is dropped with
a warning: retrying would not help.

Local stores (sqlite:///) are written directly, as before: there is no network to lose.
"""

import base64
import importlib
import json
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

from imgrec.errors import one_line

log = logging.getLogger(__name__)

# MlflowClient's writes a run makes; everything else (reads) goes straight to the server
WRITES = frozenset({"log_batch", "log_metric", "log_param", "set_tag", "delete_tag", "log_artifact", "log_artifacts",
                    "log_text", "log_dict", "log_inputs", "log_outputs", "update_run", "set_terminated"})
SPOOL = "mlflow_spool"
TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}


def is_remote(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def unreachable(err: BaseException) -> bool:
    """Whether a failed write may succeed later: the server away or overloaded, not a refusal of the write."""
    if isinstance(err, RestException):
        return err.error_code in TRANSIENT_CODES
    if isinstance(err, MlflowException):  # MLflow wraps what requests raised: "API request to ... failed ..."
        return "API request to" in err.message or "error code 5" in err.message
    import requests

    return isinstance(err, (requests.RequestException, ConnectionError, TimeoutError))


# -- a write, as it is queued and as it is kept on disk -----------------------------------------------------------

def encode(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": {k: encode(v) for k, v in value.items()}}
    if type(value).__module__.startswith("mlflow.entities"):
        proto = value.to_proto()  # a message of mlflow.protos.<module> (its __module__ says just <module>)
        module = type(proto).__module__.removeprefix("mlflow.protos.")
        return {"__entity__": type(value).__name__, "__proto__": f"{module}:{type(proto).__name__}",
                "bytes": base64.b64encode(proto.SerializeToString()).decode()}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict) and "__dict__" in value:
        return {k: decode(v) for k, v in value["__dict__"].items()}
    if isinstance(value, dict) and "__entity__" in value:
        module, name = value["__proto__"].split(":")
        if not module.isidentifier():  # only MLflow's own messages (mlflow.protos.<module>) and entities are rebuilt
            raise ValueError(f"not an MLflow message: {value['__proto__']}")
        message = getattr(importlib.import_module(f"mlflow.protos.{module}"), name)
        proto = message.FromString(base64.b64decode(value["bytes"]))
        return getattr(importlib.import_module("mlflow.entities"), value["__entity__"]).from_proto(proto)
    return value


# deferred work that is not one MlflowClient call: by name, so that a spool names it in plain JSON
TASKS: dict[str, str] = {"log_run_model": "imgrec.deploy.pyfunc:log_run_model"}


@dataclass
class Write:
    method: str  # an MlflowClient method of WRITES, or a task of TASKS
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)

    def send(self, client: MlflowClient) -> None:
        if self.method in TASKS:
            module, name = TASKS[self.method].split(":")
            getattr(importlib.import_module(module), name)(*self.args, **self.kwargs)
        else:
            getattr(client, self.method)(*self.args, **self.kwargs)

    def files(self) -> list[int]:
        """Positions of the local paths this write uploads."""
        return {"log_artifact": [1], "log_artifacts": [1], "log_run_model": [2]}.get(self.method, [])

    def to_json(self) -> str:
        return json.dumps({"method": self.method, "args": encode(self.args), "kwargs": encode(self.kwargs)})

    @classmethod
    def from_json(cls, line: str) -> "Write":
        record = json.loads(line)
        if record["method"] not in WRITES | set(TASKS):
            raise ValueError(f"not a write imgrec spools: {record['method']!r}")
        return cls(record["method"], decode(record["args"]), decode(record["kwargs"]))


# -- the client -----------------------------------------------------------------------------------------------

class SpoolingClient:
    """An MlflowClient whose writes are queued and sent in the background (see the module's docstring); reads
    and everything else are the wrapped client's."""

    def __init__(self, client: MlflowClient, tracking_uri: str, folder: Path):
        self._client, self.tracking_uri, self.files = client, tracking_uri, folder / SPOOL / "files"
        self._queue: deque[Write] = deque()
        self._changed = threading.Condition()
        self._closing, self.offline_since, self.last_error = False, None, ""
        self._sender = threading.Thread(target=self._send_all, name="mlflow-sender", daemon=True)
        self._sender.start()

    def __getattr__(self, name: str):
        if name in WRITES:
            return lambda *args, **kwargs: self.defer(name, *args, **kwargs)
        return getattr(self._client, name)

    def defer(self, method: str, *args, **kwargs) -> None:
        kwargs.pop("synchronous", None)  # Lightning's logger asks for synchronous writes: they are queued here
        write = Write(method, list(args), kwargs)
        for position in write.files():  # the caller may delete or rewrite it (a temporary folder, the next epoch)
            write.args[position] = str(self.stage(Path(write.args[position])))
        with self._changed:
            self._queue.append(write)
            self._changed.notify_all()

    def stage(self, source: Path) -> Path:
        """A copy of the file or folder to upload, under the run's spool folder until it is sent (hard links where
        the file system allows: no bytes copied for a checkpoint)."""
        kept = self.files / str(time.time_ns()) / source.name
        kept.parent.mkdir(parents=True)
        if source.is_dir():
            shutil.copytree(source, kept, copy_function=link_or_copy)
        elif source.exists():
            link_or_copy(source, kept)
        return kept

    def _send_all(self) -> None:
        delay = 1.0
        while True:
            with self._changed:
                while not self._queue and not self._closing:
                    self._changed.wait()
                if not self._queue or (self._closing and self.offline_since is not None):
                    return
                write = self._queue[0]
            try:
                write.send(self._client)
            except Exception as err:  # noqa: BLE001 - a write must never kill the run
                if unreachable(err):
                    self._offline(err)
                    with self._changed:  # woken early by close(): one more try, then spool
                        self._changed.wait(delay)
                    delay = min(delay * 2, 15.0)
                    continue
                log.warning("MLflow refused %s for good (%s); dropped", write.method, one_line(err))
            for position in write.files():  # sent: its staged copy goes
                shutil.rmtree(Path(write.args[position]).parent, ignore_errors=True)
            with self._changed:
                self._queue.popleft()
                self._changed.notify_all()
            delay = 1.0
            if self.offline_since is not None:
                log.warning("the tracking server %s is back after %.0f s: sending what the run logged meanwhile",
                            self.tracking_uri, time.time() - self.offline_since)
                self.offline_since = None

    def _offline(self, err: BaseException) -> None:
        self.last_error = one_line(err)
        if self.offline_since is None:
            self.offline_since = time.time()
            log.warning("the tracking server %s is unreachable (%s); training goes on, its logs are kept and sent "
                        "when it is back", self.tracking_uri, self.last_error[:200])

    def close(self, wait_s: float, spool_dir: Path, run_id: str) -> Path | None:
        """Send what is queued, waiting up to `wait_s` for an unreachable server; what is still unsent then goes
        to a spool in `spool_dir` (returned)."""
        deadline = time.time() + wait_s
        with self._changed:
            while self._queue and time.time() < deadline:
                self._changed.wait(min(1.0, max(deadline - time.time(), 0.01)))
            self._closing = True
            self._changed.notify_all()
        self._sender.join(timeout=5)  # the write in flight, if any
        with self._changed:
            unsent = list(self._queue)
            self._queue.clear()
        if unsent:
            return write_spool(spool_dir, self.tracking_uri, run_id, unsent)
        for empty in (self.files, self.files.parent):  # nothing staged is left: no spool folder either
            if empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()
        return None


# -- the spool on disk, and sending it --------------------------------------------------------------------------

def write_spool(folder: Path, tracking_uri: str, run_id: str, writes: list[Write]) -> Path:
    """The unsent writes as JSON lines in `folder`/mlflow_spool/writes.jsonl (appended to an older spool); the files
    they upload are staged beside already."""
    spool = folder / SPOOL
    spool.mkdir(parents=True, exist_ok=True)
    with open(spool / "writes.jsonl", "a") as out:
        if out.tell() == 0:
            out.write(json.dumps({"tracking_uri": tracking_uri, "run_id": run_id}) + "\n")
        out.writelines(write.to_json() + "\n" for write in writes)
        out.flush()
        os.fsync(out.fileno())
    return spool


def link_or_copy(source, target) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(source, target)


def spools_under(root: Path) -> Iterator[Path]:
    yield from sorted(p.parent for p in root.glob(f"**/{SPOOL}/writes.jsonl"))


def send_spool(spool: Path, tracking_uri: str | None = None) -> tuple[str, int]:
    """Send a spool's writes into its run, in order; the spool is removed when all went. Returns (run id, count).
    Raises where the server is still unreachable (the spool is kept, from the first unsent write on)."""
    lines = (spool / "writes.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    client = MlflowClient(tracking_uri or header["tracking_uri"])
    sent = 0
    try:
        for line in lines[1:]:
            try:
                Write.from_json(line).send(client)
            except Exception as err:
                if unreachable(err):
                    raise
                log.warning("MLflow refused a spooled %s for good (%s); dropped", json.loads(line)["method"],
                            one_line(err))
            sent += 1
    finally:
        if sent == len(lines) - 1:
            shutil.rmtree(spool)
        elif sent:  # keep the rest only
            (spool / "writes.jsonl").write_text("\n".join([lines[0], *lines[1 + sent:]]) + "\n")
    return header["run_id"], sent


def send_spools(root: Path, tracking_uri: str, quiet: bool = False) -> list[tuple[str, int]]:
    """Send every spool under `root` whose run lives on `tracking_uri` (what `imgrec sync` and each new run do)."""
    sent = []
    for spool in spools_under(root):
        header = json.loads((spool / "writes.jsonl").read_text().splitlines()[0])
        if header["tracking_uri"] != tracking_uri:
            continue
        try:
            sent.append(send_spool(spool))
            log.info("sent %d spooled writes into run %s", sent[-1][1], sent[-1][0])
        except Exception as err:
            if not quiet:
                raise
            log.warning("the spool %s stays: %s", spool, one_line(err))
    return sent


@contextmanager
def spooling(client: MlflowClient, tracking_uri: str, run_id: str, folder: Path, wait_s: float,
             say: Callable[[str], None] = print) -> Iterator[Any]:
    """The client a run writes through: a SpoolingClient for a remote server (MLflow's blocking HTTP retries off
    meanwhile), `client` itself for a local store."""
    if not is_remote(tracking_uri):
        yield client
        return
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # the queue retries; MLflow's would block for minutes
    spooled = SpoolingClient(client, tracking_uri, folder)
    try:
        yield spooled
    finally:
        spool = spooled.close(wait_s, folder, run_id)
        if retries is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = retries
        if spool is not None:
            say(f"the tracking server {tracking_uri} is unreachable ({spooled.last_error[:160]}): what run {run_id} "
                f"logged since is kept in {spool}; `imgrec sync` sends it when the server is back")
