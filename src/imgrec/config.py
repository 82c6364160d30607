"""Config plumbing: where conf/ lives, custom resolvers, and one-line errors for bad values."""

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from imgrec.errors import ConfigError, ImgrecError, one_line

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def register_resolvers() -> None:
    # ${uid:} makes run directories collision-proof: cached, so one config resolves to one value.
    if not OmegaConf.has_resolver("uid"):
        OmegaConf.register_new_resolver("uid", lambda: secrets.token_hex(3), use_cache=True)


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
