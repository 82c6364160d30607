"""What every command-line driver shares (scripts/sweep.py, scripts/reproduce.py, scripts/compare.py, ...).

A driver takes `key=value` overrides: its own (`sweep=...`, `table.seeds=3`) and those of every training
run it starts (`model=resnet20`, `data.root=...`). Here, once: splitting them, composition errors as one
line, the framework warnings that are only noise, and `main`: logging, `-h`, one-line errors and a clear
word on Ctrl-C. SIGTERM ends tracked work like Ctrl-C (imgrec.tracking.run.sigterm_as_interrupt), and
parent runs are found or created by imgrec.tracking.parent.
"""

import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import yaml
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

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


def quiet_warnings() -> None:
    """Silence what the frameworks say that is not the user's concern, by its exact message."""
    # Lightning 2.6 calls an API torch 2.13 deprecates, once per run.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


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
