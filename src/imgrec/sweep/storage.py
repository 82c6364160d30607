"""Where a study lives (SQLite, journal file, PostgreSQL/MySQL), its exact budget across workers, heartbeats."""

import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from filelock import FileLock
from omegaconf import DictConfig
from optuna.trial import TrialState

from imgrec.errors import ConfigError
from imgrec.repeating import repeating
from imgrec.sweep.report import is_retry, is_surplus

log = logging.getLogger(__name__)


def file_of(url: str) -> Path | None:
    """The file behind a sqlite:/// or journal:/// URL (three slashes: relative, four: absolute)."""
    if url.startswith("journal:///"):
        return Path(url.removeprefix("journal:///"))
    if url.startswith("sqlite:"):
        database = sqlalchemy.engine.make_url(url).database
        return Path(database) if database and database != ":memory:" else None
    return None


def describe_storage(url: str) -> str:
    """The storage's identity for tags and reports: absolute file paths, no passwords."""
    path = file_of(url)
    if path is not None:
        return f"{url.split(':', 1)[0]}:///{path.resolve()}"
    if url.startswith("journal:"):
        return url
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


def make_storage(url: str, spec: DictConfig) -> optuna.storages.BaseStorage:
    """The Optuna storage at `url`, with the heartbeat settings of the sweep `spec`."""
    path = file_of(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("journal:"):
        if path is None:
            raise ConfigError(f"sweep.storage: a journal file is journal:///relative/path or journal:////absolute/path, got {url}")
        return optuna.storages.journal.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    # SQLite: wait for the other workers' writes instead of failing on "database is locked".
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {"pool_pre_ping": True}

    def storage() -> optuna.storages.RDBStorage:
        kind = optuna.storages.RDBStorage if path is not None else PatientStorage
        return kind(
            url, engine_kwargs=engine, heartbeat_interval=spec.heartbeat_interval, grace_period=spec.grace_period,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(spec.max_retry))

    if path is not None:  # a new SQLite file gets its tables from one worker at a time
        with FileLock(f"{path}.lock", timeout=300):
            return storage()
    return retrying(storage)  # database servers: retry what lost the race to create the tables


class PatientStorage(optuna.storages.RDBStorage):
    """A database server's storage whose calls wait for the server when it goes away (a restart, a failover) instead
    of failing the sweep worker: each call is tried again with backoff (1, 2, 4 ... 30 s) for up to `PATIENCE_S`;
    pool_pre_ping then gives it a fresh connection. The worker's training goes on meanwhile (trial heartbeats and
    reports wait)."""

    PATIENCE_S = 900.0


def patient(method: Callable) -> Callable:
    def call(self, *args, **kwargs):
        deadline, delay, failing = time.monotonic() + self.PATIENCE_S, 1.0, False
        while True:
            try:
                result = method(self, *args, **kwargs)
            except (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError) as err:
                lost = err if isinstance(err, sqlalchemy.exc.OperationalError) else err.__cause__
                # the server away (Optuna wraps what a session raised); not a constraint or a bad query
                if not isinstance(lost, sqlalchemy.exc.OperationalError) or time.monotonic() + delay > deadline:
                    raise
                if not failing:
                    log.warning("the sweep's database is unreachable (%s); waiting for it", str(lost).splitlines()[0][:200])
                failing = True
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if failing:
                log.warning("the sweep's database is back")
            return result

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


# its whole API, and the private calls Optuna's cache and heartbeats make on it
PRIVATE = ("_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials", "_set_trial_param")
for _api in (optuna.storages.BaseStorage, optuna.storages._heartbeat.BaseHeartbeat):
    for _name, _method in vars(_api).items():
        if callable(_method) and not _name.startswith("_") and hasattr(optuna.storages.RDBStorage, _name):
            setattr(PatientStorage, _name, patient(getattr(optuna.storages.RDBStorage, _name)))
for _name in PRIVATE:
    setattr(PatientStorage, _name, patient(getattr(optuna.storages.RDBStorage, _name)))


def retrying(action: Callable[[], Any], attempts: int = 5) -> Any:
    """Workers starting together on a new database race to create its tables: retry what lost."""
    for attempt in range(attempts):
        try:
            return action()
        except sqlalchemy.exc.SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())


def within_budget(trials: Sequence[optuna.trial.FrozenTrial], number: int, n_trials: int) -> bool:
    """Whether trial `number` fills one of the study's first `n_trials` slots.

    A fresh trial takes a slot if fewer than n_trials fresh, non-surplus trials precede it in the
    study's creation order, which every worker sees the same way; a retry takes its original's slot.
    """
    trial = next(t for t in trials if t.number == number)
    if is_surplus(trial):
        return False
    if is_retry(trial):
        return True
    return sum(t.number < number and not is_retry(t) and not is_surplus(t) for t in trials) < n_trials


def budget_is_spent(trials: Sequence[optuna.trial.FrozenTrial], n_trials: int) -> bool:
    fresh = sum(not is_retry(t) and not is_surplus(t) for t in trials)
    return fresh >= n_trials and not any(t.state == TrialState.WAITING for t in trials)


@contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat while it runs (what study.optimize does; ask/tell must do it itself),
    so that if this process dies, another worker fails the trial after the grace period and re-queues it."""
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if not interval:
        yield
        return
    # Optuna's own HeartbeatThread records with the same id
    with repeating(lambda: storage.record_heartbeat(trial._trial_id), interval, name=f"heartbeat-trial-{trial.number}",
                   at_start=True):
        yield
