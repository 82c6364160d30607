"""Config plumbing: where conf/ lives, custom resolvers, and one-line errors for bad values."""

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict

from imgrec.errors import ConfigError, ImgrecError, one_line

CONF_DIR = Path(__file__).parent / "conf"  # in a checkout, a link to the repo's conf/; installed, a copy of it


def default_tracking_uri() -> str:
    """Where train.py tracks when nothing says otherwise (conf/logger/mlflow.yaml under conf/paths): for drivers
    that read runs without composing a training config (imgrec.hub, scripts/compare.py)."""
    cfg = OmegaConf.create({"paths": OmegaConf.load(CONF_DIR / "paths" / "default.yaml"),
                            "logger": OmegaConf.load(CONF_DIR / "logger" / "mlflow.yaml")})
    return cfg.logger.tracking_uri


def register_resolvers() -> None:
    # ${uid:} makes run directories collision-proof: cached, so one config resolves to one value.
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True)


def compose(overrides: list[str], output_dir: str | Path, config_name: str = "train") -> DictConfig:
    """The config `python train.py OVERRIDES` would get, for drivers that call train() themselves
    (sweeps, tables, benchmarks, tests). `output_dir` stands in for the Hydra run dir."""
    register_resolvers()
    cfg = compose_driver(config_name, overrides)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)  # so ${hydra:...} interpolations resolve
    return cfg


def compose_driver(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """A driver's own config (conf/sweep_driver.yaml, conf/reproduce.yaml), with its Hydra node
    (`hydra.runtime.choices` tells which group options were picked)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=True)


def override_key(override: str) -> str:
    """`+model.x=1` -> `model.x`."""
    return override.lstrip("+~").split("=", 1)[0]


def save_hydra_files(cfg: DictConfig, overrides: Sequence[str], output_dir: Path) -> None:
    """.hydra/{config,overrides,hydra}.yaml as hydra.main writes them (train() logs them to MLflow)."""
    hydra_dir = output_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.save(config, hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), hydra_dir / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": cfg.hydra}), hydra_dir / "hydra.yaml")


def hydra_message(err: Exception) -> str:
    """Hydra's error on one line, without the config search path it appends."""
    return one_line(str(err).split("Config search path:")[0])


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
