"""Where a driver's training runs run: `launcher=local|processes|submitit_local|slurm` (conf/launcher/).

A driver that needs several runs (the rows and seeds of `reproduce`, the folds of `cv`) hands them here before its
own loop: `train_all(jobs, launcher)` trains every one that has no finished run yet and returns when each finished
or failed; the driver's loop then finds them finished (imgrec.jobs.reuse_or_train) and reports as always.

- local: nothing here; the driver trains them one after another in its own process (the default).
- processes: `workers` local processes (`python -m imgrec.launch worker QUEUE`) claim the jobs from a queue folder
  under outputs/launch/ (a file-locked state, one claim per job); a worker that dies leaves its job to another:
  a claim whose process is gone is taken again, and the run resumes from its last checkpoint.
- submitit_local, slurm: each job is a submitit job (a SLURM job array on a cluster: `partition`, `gpus_per_task`,
  `timeout_min`, `array_parallelism`, extra sbatch options; `submitit_local` runs the same path on this machine,
  at most `workers` at a time). A preempted or timed-out job is requeued by submitit, and a job that failed is
  submitted again (`retries`); either way it resumes from its last checkpoint into the same MLflow run.

Every job trains with `ckpt_path=last`: an interrupted run of its config is resumed, a finished one reused.
The driver prints progress (pending / running / finished / failed) as it changes; Ctrl-C stops what it started.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import submitit
from filelock import FileLock
from omegaconf import DictConfig

from imgrec.errors import ConfigError, ImgrecError, one_line
from imgrec.jobs import TrainJob
from imgrec.report import write_atomically

log = logging.getLogger(__name__)

KINDS = ("local", "processes", "submitit_local", "slurm")


def check(launcher: DictConfig, tracking_uri: str) -> None:
    """One line for a launcher that cannot work here, before anything is submitted."""
    kind = launcher.get("kind", "local")
    if kind not in KINDS:
        raise ConfigError(f"launcher: one of {', '.join(KINDS)}, got {kind!r}")
    workers = launcher.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"launcher.workers: a positive number of workers, got {workers!r}")
    if kind == "slurm":
        if shutil.which("sbatch") is None:
            raise ConfigError("launcher=slurm: sbatch is not on this machine's PATH (submit from a SLURM login node, "
                              "or try the same path here with launcher=submitit_local)")
        if tracking_uri.startswith("sqlite:"):
            raise ConfigError(f"launcher=slurm: the tracking store {tracking_uri} is a file on this machine, which "
                              "the nodes cannot share safely; run `mlflow server` on a database and set "
                              "logger.tracking_uri=http://<host>:5000 (README: On a cluster)")


# -- a job as the workers see it ------------------------------------------------------------------------------

def spec_of(job: TrainJob, output_dir: Path, parent_id: str | None) -> dict:
    return {"overrides": job.overrides, "name": job.name, "what": job.what, "tags": job.tags, "reuse": job.reuse,
            "token": job.token, "output_dir": str(output_dir), "parent_id": parent_id}


def train_spec(spec: dict) -> str:
    """Train one job (in a worker): its finished run if there is one, else trained, resuming an interrupted run of
    its config; returns the run's id."""
    from imgrec.tracking.store import open_store

    job = TrainJob([*spec["overrides"], "ckpt_path=last"], spec["name"], spec["what"], spec["tags"], spec["reuse"])
    job.token = spec["token"]  # the driver finds the run by it
    client = open_store(str(job.cfg.logger.tracking_uri))
    run = job.finished_run(client)
    if run is None:
        job.train(Path(spec["output_dir"]), spec["parent_id"])
        run = job.started_run(client)
    if run is None or client.get_run(run.info.run_id).info.status != "FINISHED":
        raise ImgrecError(f"{spec['what']}: its run did not finish")
    return run.info.run_id


def run_spec(spec: dict) -> str:
    """A worker's job: a training run (train_spec), or a whole verb's command (`verb`, `argv`: a sweep worker)."""
    if "verb" in spec:
        from imgrec.cli import run

        run(spec["verb"], spec["argv"])
        return ""
    return train_spec(spec)


class Progress:
    """One line whenever the counts change: `3 jobs: 1 pending, 1 running, 1 finished, 0 failed`."""

    def __init__(self, total: int):
        self.total, self.last = total, None

    def show(self, running: int, finished: int, failed: int) -> None:
        counts = (self.total - running - finished - failed, running, finished, failed)
        if counts != self.last:
            self.last = counts
            log.info("%d jobs: %d pending, %d running, %d finished, %d failed", self.total, *counts)


# -- launcher=processes ---------------------------------------------------------------------------------------

class Queue:
    """A folder: jobs.json (the specs) and state.json (index -> {status, pid, pid_start, error}), under a file lock."""

    def __init__(self, folder: Path):
        self.folder, self.lock = folder, FileLock(str(folder / "state.lock"), timeout=60)

    def create(self, specs: list[dict]) -> "Queue":
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "jobs.json").write_text(json.dumps(specs))
        (self.folder / "state.json").write_text("{}")
        return self

    def specs(self) -> list[dict]:
        return json.loads((self.folder / "jobs.json").read_text())

    def state(self) -> dict[str, dict]:
        return json.loads((self.folder / "state.json").read_text())

    def _write(self, state: dict) -> None:
        write_atomically(self.folder / "state.json", json.dumps(state))

    def claim(self) -> tuple[int, dict] | None:
        """The next job nobody holds (never claimed, or claimed by a process that is gone), now this process's."""
        from imgrec.tracking.store import process_start

        with self.lock:
            state = self.state()
            for index, spec in enumerate(self.specs()):
                entry = state.get(str(index))
                alive = entry is not None and entry["status"] == "running" and \
                    process_start(entry["pid"]) == entry["pid_start"]
                if entry is None or (entry["status"] == "running" and not alive):
                    state[str(index)] = {"status": "running", "pid": os.getpid(),
                                         "pid_start": process_start(os.getpid())}
                    self._write(state)
                    return index, spec
        return None

    def mark(self, index: int, status: str, error: str = "") -> None:
        with self.lock:
            state = self.state()
            state[str(index)] = {"status": status, "error": error}
            self._write(state)

    def counts(self) -> tuple[int, int, int]:
        statuses = [entry["status"] for entry in self.state().values()]
        return statuses.count("running"), statuses.count("finished"), statuses.count("failed")


def work(folder: Path) -> None:
    """A worker: claims and trains jobs until none is left."""
    queue = Queue(folder)
    while (claimed := queue.claim()) is not None:
        index, spec = claimed
        try:
            run_spec(spec)
            queue.mark(index, "finished")
        except (Exception, SystemExit) as err:  # the job failed, not the worker: the next one goes on
            log.exception("%s failed", spec["what"])
            queue.mark(index, "failed", one_line(err)[:500])


def run_processes(specs: list[dict], workers: int, folder: Path) -> list[str]:
    queue = Queue(folder).create(specs)
    progress = Progress(len(specs))
    command = [sys.executable, "-m", "imgrec.launch", "worker", str(folder)]
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))  # cores shared
    with ExitStack() as logs:
        processes = [subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": threads}, stderr=subprocess.STDOUT,
                                      stdout=logs.enter_context(open(folder / f"worker{i}.log", "w")))
                     for i in range(min(workers, len(specs)))]
        try:
            while any(p.poll() is None for p in processes):
                progress.show(*queue.counts())
                time.sleep(1)
        except KeyboardInterrupt:
            for process in processes:
                process.terminate()  # their runs end KILLED (SIGTERM ends a run like Ctrl-C)
            for process in processes:
                process.wait()
            raise
    state = queue.state()
    if len(state) < len(specs) or any(entry["status"] == "running" for entry in state.values()):
        work(folder)  # the workers died with jobs claimed or left: finished here
        state = queue.state()
    progress.show(*queue.counts())
    return [f"{specs[int(i)]['what']}: {e['error']}" for i, e in state.items() if e["status"] == "failed"]


# -- launcher=submitit_local | slurm -----------------------------------------------------------------------------

class TrainCall(submitit.helpers.Checkpointable):
    """What a submitit job runs: one job; on preemption or timeout submitit requeues it (Checkpointable), and it
    resumes from the run's last checkpoint."""

    def __call__(self, spec: dict) -> str:
        return run_spec(spec)


def executor_for(launcher: DictConfig, folder: Path):
    kind = launcher.kind
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster="local" if kind == "submitit_local" else None)
    params = {"timeout_min": int(launcher.timeout_min), "name": "imgrec"}
    if kind == "slurm":
        params.update(slurm_partition=launcher.partition, gpus_per_node=int(launcher.gpus_per_task),
                      tasks_per_node=1, slurm_array_parallelism=int(launcher.array_parallelism or launcher.workers),
                      slurm_additional_parameters=dict(launcher.sbatch or {}))
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def run_submitit(specs: list[dict], launcher: DictConfig, folder: Path) -> list[str]:
    executor = executor_for(launcher, folder)
    in_flight = len(specs) if launcher.kind == "slurm" else launcher.workers  # SLURM: array_parallelism limits
    progress, waiting = Progress(len(specs)), list(range(len(specs)))
    attempts, running, finished, failures = dict.fromkeys(range(len(specs)), 0), {}, set(), {}
    try:
        while waiting or running:
            while waiting and len(running) < in_flight:
                index = waiting.pop(0)
                running[index] = executor.submit(TrainCall(), specs[index])
                attempts[index] += 1
            for index, job in list(running.items()):
                if not job.done():
                    continue
                del running[index]
                error = job.exception()
                if error is None:
                    finished.add(index)
                elif attempts[index] <= launcher.retries:  # killed or failed: again, resuming its run
                    log.warning("%s: job %s failed (%s); submitted again", specs[index]["what"], job.job_id,
                                one_line(error)[-300:])
                    waiting.insert(0, index)
                else:
                    failures[index] = one_line(error)[-500:]
            progress.show(len(running), len(finished), len(failures))
            time.sleep(1)
    except KeyboardInterrupt:
        for job in running.values():
            job.cancel(check=False)
        raise
    return [f"{specs[i]['what']}: {error}" for i, error in sorted(failures.items())]


# -- what drivers call -----------------------------------------------------------------------------------------

def train_all(jobs: Sequence[tuple[TrainJob, Path]], launcher: DictConfig, client, parent_id: str | None,
              folder: Path) -> list[str]:
    """Train, on the launcher, the jobs (job, its output folder) that have no finished run yet; returns one line per
    job that failed. launcher=local trains nothing here (the driver's own loop does)."""
    if launcher.get("kind", "local") == "local":
        return []
    todo = [(job, out) for job, out in jobs if job.finished_run(client) is None]
    if not todo:
        return []
    log.info("launcher=%s: %d of %d jobs to train, %d at a time", launcher.kind, len(todo), len(jobs),
             launcher.workers)
    return dispatch([spec_of(job, out, parent_id) for job, out in todo], launcher, folder)


def dispatch(specs: list[dict], launcher: DictConfig, folder: Path) -> list[str]:
    """The specs on the launcher (not local), from a folder of this invocation; one line per failed one."""
    folder = folder / time.strftime("%Y-%m-%d_%H-%M-%S")
    if launcher.kind == "processes":
        return run_processes(specs, launcher.workers, folder)
    return run_submitit(specs, launcher, folder)


def run_workers(verb: str, argv: Sequence[str], launcher: DictConfig, folder: Path) -> list[str]:
    """`launcher.workers` copies of `imgrec VERB argv` (sweep workers sharing one study) on the launcher; returns
    one line per worker that failed."""
    log.info("launcher=%s: %d %s workers", launcher.kind, launcher.workers, verb)
    specs = [{"what": f"{verb} worker {i}", "verb": verb, "argv": list(argv)} for i in range(launcher.workers)]
    return dispatch(specs, launcher, folder)


if __name__ == "__main__":  # python -m imgrec.launch worker QUEUE_FOLDER
    from imgrec import config, console

    console.setup()
    config.register_resolvers()
    if sys.argv[1:2] != ["worker"] or len(sys.argv) != 3:
        raise SystemExit("usage: python -m imgrec.launch worker QUEUE_FOLDER")
    work(Path(sys.argv[2]))
