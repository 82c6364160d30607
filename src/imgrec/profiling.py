"""Where a whole process's time goes, by phase: a py-spy profile (`imgrec bench mode=profile`) summarised.

py-spy samples the process from outside, to its last instruction: imgrec ends its processes with os._exit, which
cProfile never sees. Each sample of the main thread goes to the phase of the first rule below that one of its
frames matches (imports first: an import during the test counts as an import); other threads (the MLflow heartbeat,
a progress bar) are counted apart, off the critical path. An import is charged to the first third-party package on
its stack (torch, imported by Lightning, is Lightning's).
"""

import collections
import shutil
import subprocess
import sys
from pathlib import Path

from imgrec.errors import ImgrecError

RATE = 50  # samples per second
PHASES = (  # (phase, a substring of a frame): the first rule that matches any frame of a sample names its phase
    ("imports", "_find_and_load"),
    ("test (trainer.test)", "Trainer._test_impl"),
    ("logged model", "LoggedModel"),
    ("checkpoint", "_save_topk_checkpoint"), ("checkpoint", "_save_last_checkpoint"),
    ("validation", "_EvaluationLoop.run"),
    ("training batches", "_TrainingEpochLoop.run"),
    ("opening the store", "MlflowClient.__init__"), ("opening the store", "open_store"),
    ("run bookkeeping (tags, params, status)", "RunLogger"), ("run bookkeeping (tags, params, status)", "MlflowClient"),
    ("reading the data", "split_dataset"), ("reading the data", "ImageDataModule"),
    ("config", "compose"), ("config", "hydra"),
    # scripts/plain_loop.py's own functions
    ("validation", "accuracy (plain_loop.py"), ("training batches", "batches (plain_loop.py"),
    ("training batches", "main (plain_loop.py"),
)
BACKGROUND = "Thread._bootstrap"  # a frame of every thread but the main one


def phase_of(frames: list[str]) -> str | None:
    """The phase of one sample's stack (None: a background thread's)."""
    if any(BACKGROUND in frame for frame in frames):
        return None
    for phase, marker in PHASES:
        if any(marker in frame for frame in frames):
            return phase
    return "other"


def summarise(raw: Path, rate: float = RATE) -> tuple[dict[str, float], dict[str, float], float]:
    """A `py-spy record -f raw` file -> ({phase: seconds} of the main thread, {package: seconds} of its imports,
    seconds of background threads)."""
    phases: collections.Counter = collections.Counter()
    imports: collections.Counter = collections.Counter()
    background = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, samples = stack.split(";"), int(count)
        phase = phase_of(frames)
        if phase is None:
            background += samples
            continue
        phases[phase] += samples
        if phase == "imports":
            modules = [f.split(" (", 1)[1].split(":")[0] for f in frames if f.startswith("<module> (")]
            packages = [m.split("/")[0] for m in modules if "/" in m and not m.startswith("imgrec/")]
            imports[(packages or ["imgrec and the script"])[0]] += samples
    return ({k: v / rate for k, v in phases.most_common()}, {k: v / rate for k, v in imports.most_common()},
            background / rate)


def record(command: list[str], raw: Path, env: dict[str, str], cwd: Path, rate: int = RATE) -> Path:
    """Run `command` under py-spy, its raw profile written to `raw`; returns `raw`."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise ImgrecError("py-spy is not installed: pip install py-spy (it comes with imgrec[dev])")
    done = subprocess.run([spy, "record", "-r", str(rate), "-f", "raw", "-o", str(raw), "--", *command], env=env,
                          cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0 or not raw.exists():
        raise ImgrecError(f"py-spy record {' '.join(command[1:])} failed: {done.stderr.strip()[-300:]}")
    return raw
