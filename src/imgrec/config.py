"""Config plumbing: where conf/ lives, custom resolvers, and one-line errors for bad values."""

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from imgrec.errors import ConfigError, ImgrecError, one_line

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def register_resolvers() -> None:
    # ${uid:} makes run directories collision-proof: cached, so one config resolves to one value.
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True)


def compose(overrides: list[str], output_dir: str | Path, config_name: str = "train") -> DictConfig:
    """The config `python train.py OVERRIDES` would get, for drivers that call train() themselves
    (sweeps, tables, benchmarks, tests). `output_dir` stands in for the Hydra run dir."""
    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)  # so ${hydra:...} interpolations resolve
    return cfg


@contextmanager
def config_errors(group: str) -> Iterator[None]:
    """Turn a failure to build config group `group` into a ConfigError that names it, on one line."""
    try:
        yield
    except ImgrecError:
        raise
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, ImgrecError):
            raise cause from None
        raise ConfigError(f"{group}: {one_line(cause)}") from err
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{group}: {one_line(err)}") from err
