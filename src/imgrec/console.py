"""What every command prints and how: the log format, the frameworks' notices that are only noise (dropped by
their exact text, so that every other notice and warning still shows), and a quick exit."""

import logging
import os
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"

# Lightning's notices that say nothing about the run (rank_zero_info, the only way it says them).
LIGHTNING_NOISE = (
    "💡 Tip: For seamless cloud logging",  # an advert, printed whenever the logger is not Lightning's LitLogger
    "GPU available: ", "TPU available: ",  # the device is in the config summary and the run's params
    "LOCAL_RANK: ",  # CUDA_VISIBLE_DEVICES per rank
    # trainer.test() asks the task for its callbacks again: a new weight average (task.ema) replaces fit's, and the
    # test loads the checkpoint's averaged weights as they are
    "The following callbacks returned in `LightningModule.configure_callbacks` will override existing callbacks "
    "passed to Trainer: WeightAveraging",
)


class DropMessages(logging.Filter):
    """Drops log records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: Sequence[str]):
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_warnings() -> None:
    """Silence what the frameworks say that is not the user's concern, by its exact message."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, DropMessages) for f in rank_zero.filters):
        rank_zero.addFilter(DropMessages(LIGHTNING_NOISE))
    # The model summary cannot size bf16 weights and says so at every run; the summary's counts are right.
    warnings.filterwarnings("ignore", message=r".*is not supported by the model summary.*")
    # The test's weight average (task.ema, see LIGHTNING_NOISE) has nothing to restore: the weights are the average
    warnings.filterwarnings("ignore", message=r".*using the WeightAveraging callback, but loading a checkpoint outsi.*")
    # Lightning 2.6 calls an API torch 2.13 deprecates, once per run.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # captum marks the images it differentiates (attacks, attributions) and says so at every call.
    warnings.filterwarnings("ignore", message=r".*did not already require gradients.*")
    warnings.filterwarnings("ignore", message=r".*Setting backward hooks on ReLU.*")  # captum's guided backprop
    # An all-zero attribution map (imgrec.explain.metrics): its rank correlation counts as 0, said in the report.
    warnings.filterwarnings("ignore", message=r".*An input array is constant.*")
    # Optuna marks its newer APIs (heartbeats, constraints) experimental at every call.
    warnings.filterwarnings("ignore", message=r".*is experimental \(supported from v.*")
    warnings.filterwarnings("ignore", message=r".*is an experimental feature\. The interface can change.*")
    # torch.onnx's exporter says, at every export, that torchvision (never installed here) is missing.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


_command: list[str] | None = None  # the command as typed (`imgrec train x=1`), set by imgrec.cli


def set_command(words: Sequence[str]) -> None:
    global _command
    _command = list(words)


def command_line() -> str:
    """The command this process runs, as the user typed it: for the `command` tag of its runs."""
    return shlex.join(_command if _command is not None else [Path(sys.argv[0]).name, *sys.argv[1:]])


def setup() -> None:
    """A command's console: imgrec's own log lines at INFO, everyone else's at WARNING, without the noise."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    logging.getLogger("imgrec").setLevel(logging.INFO)
    quiet_warnings()
    # MLflow draws a progress bar for every artifact it downloads (compare reads one file per run): not news
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def exit_now(code: int = 0) -> None:
    """Exit a finished command without the interpreter's teardown of its modules: with Lightning and MLflow
    loaded it takes about a second (measured: `import lightning, mlflow` alone makes exiting 1.1 s, torch 0.2 s).
    Everything is written by then (runs ended, checkpoints closed); logs and streams are flushed here."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
