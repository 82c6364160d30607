"""`imgrec train [key=value ...]` (and `python train.py ...`): train one model on one dataset (imgrec.train).

Hydra's own main, so that multirun (-m), --cfg, tab completion and run directories work as Hydra users expect;
the overrides are checked first (composed and validated), so that a mistake is one line naming the key and
no run directory or MLflow run is made.
"""

import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from imgrec import config
from imgrec.config import COMPOSE_ERRORS, CONF_DIR, hydra_message
from imgrec.errors import ImgrecError

MULTIRUN = ("-m", "--multirun")
GROUPS = ("data", "model", "task", "optimizer", "scheduler", "trainer", "experiment", "debug", "callbacks", "logger",
          "paths")

HELP = """usage: imgrec train [group=option] [key=value ...]        (python train.py ... is the same)

Trains one model on one dataset: composes conf/train.yaml with the overrides, fits the model with Lightning,
tests its best checkpoint and tracks the run in MLflow. It prints the test metrics and the run's id: runs:/<run_id>
is how every other verb names the trained model (imgrec evaluate model=runs:/<run_id>, ...). Files go to
outputs/runs/<time>_<id>/ (checkpoints, train.log, .hydra/), the run to the MLflow store (logger.tracking_uri:
MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db; `make ui` opens it).

Config groups (group=option; input shape and class count come from the data):
{groups}

Top-level keys: seed (0; null draws one), ckpt_path (last: resume the interrupted run of this config),
test (true), memory_format (auto), compile (false), optimized_metric (val/acc_best). Any other key as
key=value (model.channels=[32,64] trainer.max_epochs=10), a new one as +key=value.

  imgrec train --cfg job              the composed config, without training
  imgrec train -m seed=0,1,2          one run per value (Hydra multirun)
  eval "$(python train.py -sc install=bash)"    tab completion of groups and keys (bash)
  imgrec train --hydra-help           Hydra's own flags
"""


def help_text() -> str:
    groups = "\n".join(f"  {group}: {', '.join(config.options(group))}" for group in GROUPS)
    return HELP.format(groups=groups)


def precheck(argv: Sequence[str]) -> None:
    """Compose and validate the config these overrides make (the first value of each multirun sweep), so that a
    mistake fails here, in one line, before Hydra makes a run directory and train() opens the store."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from imgrec.validation import validate

    overrides = []
    for parsed in OverridesParser.create().parse_overrides([a for a in argv if a not in MULTIRUN]):
        text = parsed.input_line
        if parsed.is_sweep_override():
            text = f"{parsed.get_key_element()}={next(iter(parsed.sweep_string_iterator()))}"
        overrides.append(text)
    validate(config.compose(overrides, output_dir="<check>"))


def main(argv: Sequence[str] | None = None) -> None:
    """`python train.py [overrides]`, `imgrec train [overrides]`."""
    import hydra

    from imgrec.console import quiet_warnings

    argv = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(argv):
        print(help_text())
        return
    config.register_resolvers()
    quiet_warnings()
    if all(not a.startswith("-") or a in MULTIRUN for a in argv):  # overrides only: Hydra's flags pass straight on
        try:
            precheck(argv)
        except (ImgrecError, *COMPOSE_ERRORS) as err:
            raise SystemExit(f"error: {hydra_message(err)}") from None
    saved, sys.argv = sys.argv, [sys.argv[0], *argv]  # what hydra.main parses
    try:
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")(train_job)()
    finally:
        sys.argv = saved


def train_job(cfg: DictConfig) -> float | None:
    """One job of hydra.main: train() with its errors as one line."""
    from imgrec.train import train

    try:
        return train(cfg)
    except ImgrecError as err:
        raise SystemExit(f"error: {err}") from None
