"""The MLflow store: created under a lock, and kept free of orphans.

Every imgrec command opens its store with `open_store(uri)`:

- a new SQLite store is created (tables and migrations) by one process at a time, under a file lock
  beside the database, so N processes starting together on a fresh store all succeed;
- runs left RUNNING by a process that is gone are ended KILLED, with the tag `imgrec.ended_by` saying
  why. Each run imgrec opens carries the host, process id and process start time that own it
  (`process_tags()`), and a heartbeat tag while it runs (`Heartbeat`). A run of this host whose process
  is dead, or whose pid now belongs to another process, is an orphan; a run of another host is one when
  its heartbeat is older than HEARTBEAT_STALE_S (that host's processes cannot be seen from here).
"""

import logging
import os
import platform
import time
from pathlib import Path

from filelock import FileLock
from mlflow import MlflowClient

from imgrec.repeating import repeating
from imgrec.tracking.query import find_runs

log = logging.getLogger(__name__)

HOST_TAG, PID_TAG, PID_START_TAG = "imgrec.host", "imgrec.pid", "imgrec.pid_start"
HEARTBEAT_TAG, ENDED_BY_TAG = "imgrec.heartbeat", "imgrec.ended_by"
HEARTBEAT_S = 60  # how often a running run says it is alive
HEARTBEAT_STALE_S = 15 * 60  # silent this long, a run of another host is taken for dead


def sqlite_file(tracking_uri: str) -> Path | None:
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def open_store(tracking_uri: str, reap: bool = True) -> MlflowClient:
    """A client of the store at `tracking_uri`, created if new (one process at a time), orphans ended."""
    database = sqlite_file(tracking_uri)
    if database is None:
        client = MlflowClient(tracking_uri)
    else:
        database.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{database}.lock", timeout=300):  # the client creates (or migrates) the tables on first use
            client = MlflowClient(tracking_uri)
            client.search_experiments(max_results=1)
    if reap:
        reap_orphans(client)
    return client


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, from /proc), or None when there is no such process.
    Without /proc (not Linux), "?" for a live pid: a reused pid then goes unnoticed."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 (starttime); the fields after ")" start at 3


def process_tags() -> dict[str, str]:
    """Who owns a run: this host and process (a pid can be reused; the start time tells them apart)."""
    pid = os.getpid()
    return {HOST_TAG: platform.node(), PID_TAG: str(pid), PID_START_TAG: str(process_start(pid)),
            HEARTBEAT_TAG: str(int(time.time()))}


def orphan_reason(tags: dict[str, str], now: float) -> str | None:
    """Why a RUNNING run with these tags has no live owner, or None if it may still be running."""
    if PID_TAG not in tags:
        return None  # not opened by imgrec (or just created): not ours to end
    if tags.get(HOST_TAG) == platform.node():
        started = process_start(int(tags[PID_TAG]))
        if started is None:
            return f"its process {tags[PID_TAG]} on {tags[HOST_TAG]} is gone"
        if started not in (tags.get(PID_START_TAG), "?"):
            return f"its process {tags[PID_TAG]} on {tags[HOST_TAG]} is gone (the pid now belongs to another process)"
        return None
    silent = now - float(tags.get(HEARTBEAT_TAG, now))
    if silent > HEARTBEAT_STALE_S:
        return f"no heartbeat from {tags.get(HOST_TAG)} for {silent / 60:.0f} min"
    return None


def reap_orphans(client: MlflowClient) -> list[str]:
    """End the store's orphaned RUNNING runs as KILLED; returns their ids."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    reaped, now = [], time.time()
    for run in find_runs(client, experiments, status="RUNNING"):
        reason = orphan_reason(run.data.tags, now)
        if reason is None:
            continue
        client.set_tag(run.info.run_id, ENDED_BY_TAG, f"imgrec: left RUNNING, ended KILLED: {reason}")
        client.set_terminated(run.info.run_id, "KILLED")
        log.warning("MLflow run %s (%s) was left RUNNING: %s; ended KILLED", run.info.run_id, run.info.run_name, reason)
        reaped.append(run.info.run_id)
    return reaped


def heartbeat(client: MlflowClient, run_id: str, interval: float = HEARTBEAT_S):
    """Refresh the run's heartbeat tag every `interval` seconds while the block runs (a daemon thread)."""

    def beat() -> None:
        try:
            client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))
        except Exception as err:  # a busy store must not kill training; the next beat tries again
            log.debug("heartbeat of run %s failed: %s", run_id, err)

    return repeating(beat, interval, name=f"mlflow-heartbeat-{run_id[:8]}")
