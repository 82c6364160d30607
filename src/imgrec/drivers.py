"""What every command-line driver shares (scripts/sweep.py, scripts/reproduce.py, scripts/compare.py, ...).

A driver takes `key=value` overrides: its own (`sweep=...`, `table.seeds=3`) and those of every training
run it starts (`model=resnet20`, `data.root=...`). Here, once: splitting them, composition errors as one
line, the framework warnings that are only noise, and `main`: logging, `-h`, one-line errors and a clear
word on Ctrl-C. SIGTERM ends tracked work like Ctrl-C (imgrec.tracking.run.sigterm_as_interrupt), and
parent and child runs are opened by imgrec.tracking.driver_run.
"""

import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from imgrec import config
from imgrec.config import hydra_message, override_key, register_resolvers
from imgrec.errors import ConfigError, ImgrecError

COMPOSE_ERRORS = (HydraException, OmegaConfBaseException, yaml.YAMLError)


def split_overrides(argv: Sequence[str], driver_keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the driver's overrides: keys in or under `driver_keys`; every training run's: the rest).
    `hydra.*` overrides (the search path...) go to both."""
    driver, train = [], []
    for arg in argv:
        key = override_key(arg)
        if any(key == k or key.startswith(k + ".") for k in driver_keys):
            driver.append(arg)
        else:
            train.append(arg)
            if key.startswith("hydra."):
                driver.append(arg)
    return driver, train


@contextmanager
def composing(what: str = "") -> Iterator[None]:
    """A config that does not compose (unknown key or option, bad YAML) fails as one ConfigError line."""
    try:
        yield
    except COMPOSE_ERRORS as err:
        raise ConfigError(f"{what}{': ' if what else ''}{hydra_message(err)}") from None


def compose(config_name: str, argv: Sequence[str], plain_keys: Sequence[str] = ()) -> DictConfig:
    """A driver's own config (conf/<config_name>.yaml) with the command line's overrides, or one ConfigError line.
    `plain_keys` are set as plain strings after composing: `model=runs:/<id>` names a trained model here, while
    Hydra would take `model` for the config group of that name in conf/."""
    plain = {override_key(a): a.split("=", 1)[1] for a in argv if "=" in a and override_key(a) in plain_keys}
    with composing():
        cfg = config.compose_driver(config_name, [a for a in argv if override_key(a) not in plain])
    for key, value in plain.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


@dataclass
class ModelJob:
    """Where a script that uses a trained model (`model=<uri>`) starts: the model, on [0, 1] pixels; the run
    that trained it (its results become that run's child runs); and `outputs/<verb>/<run id>/` for its files."""

    cfg: DictConfig
    model: Any  # imgrec.hub.PixelModel
    source_run_id: str | None
    out_dir: Path
    client: Any  # MlflowClient

    @classmethod
    def open(cls, cfg: DictConfig, verb: str) -> "ModelJob":
        from mlflow.exceptions import MlflowException

        from imgrec import hub
        from imgrec.tracking.store import open_store

        model = hub.load_model(str(cfg.model), cfg.logger.tracking_uri, key="model")
        client = open_store(cfg.logger.tracking_uri)
        run_id = model.spec.run_id
        try:
            if run_id:
                client.get_run(run_id)
        except MlflowException:  # a checkpoint from another store: its run is not here
            run_id = None
        name = run_id or Path(str(cfg.model)).stem.replace(":", "_")
        return cls(cfg, model, run_id, Path(cfg.paths.root) / "outputs" / verb / name, client)

    def child_run(self, name: str, params: dict[str, Any]):
        """A DriverRun under the source run (tagged imgrec.source_run), named `name`."""
        from imgrec.tracking.driver_run import DriverRun

        tags = {"mlflow.runName": name, "imgrec.role": name.split("-")[0], "imgrec.model_uri": str(self.cfg.model)}
        return DriverRun.child_of(self.client, self.source_run_id, name, tags, params,
                                  experiment_name=self.cfg.logger.experiment_name)


# Lightning's notices that say nothing about the run (rank_zero_info, the only way it says them): dropped by
# their exact text, so that every other notice and warning still shows.
LIGHTNING_NOISE = (
    "💡 Tip: For seamless cloud logging",  # an advert, printed whenever the logger is not Lightning's LitLogger
    "GPU available: ", "TPU available: ",  # the device is in the config summary and the run's params
    "LOCAL_RANK: ",  # CUDA_VISIBLE_DEVICES per rank
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
    # Lightning 2.6 calls an API torch 2.13 deprecates, once per run.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # captum marks the images it differentiates (attacks, attributions) and says so at every call.
    warnings.filterwarnings("ignore", message=r".*did not already require gradients.*")
    warnings.filterwarnings("ignore", message=r".*Setting backward hooks on ReLU.*")  # captum's guided backprop
    # An all-zero attribution map (imgrec.explain.metrics): its rank correlation counts as 0, said in the report.
    warnings.filterwarnings("ignore", message=r".*An input array is constant.*")
    # torch.onnx's exporter says, at every export, that torchvision (never installed here) is missing.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def main(run: Callable[[list[str]], object], argv: Sequence[str] | None, usage: str | None = None,
         interrupted: str = "interrupted", required: str | None = None) -> None:
    """Run `run(argv)` as a console command: `-h` (or a missing `required` key) prints `usage`; a user error
    is one line `error: ...` and exit 1; Ctrl-C prints `interrupted: <interrupted>`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    asked = bool({"-h", "--help"} & set(argv))
    if usage and (asked or (required and not any(override_key(a) == required for a in argv))):
        print(usage)
        raise SystemExit(0 if asked else 2)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger("imgrec").setLevel(logging.INFO)
    quiet_warnings()
    register_resolvers()
    try:
        run(argv)
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted: {interrupted}") from None
    except (ImgrecError, *COMPOSE_ERRORS) as err:
        raise SystemExit(f"error: {hydra_message(err)}") from None
