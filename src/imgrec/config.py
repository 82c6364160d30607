"""Config plumbing: where conf/ lives, composing a config with one-line errors that say what was meant
(the options of a group, the key a typo was close to), custom resolvers, and one-line errors for bad values."""

import copy
import difflib
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from imgrec.errors import ConfigError, ImgrecError, one_line

CONF_DIR = Path(__file__).parent / "conf"  # in a checkout, a link to the repo's conf/; installed, a copy of it
# How a config key names a trained model (imgrec.hub resolves it).
URI_FORMS = ("path/to/epoch_003.ckpt | runs:/<run_id> (what `imgrec train` prints) | models:/<name>@<alias> | "
             "models:/<name>/<version>")


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
    return placed(compose_driver(config_name, overrides), output_dir)


def placed(cfg: DictConfig, output_dir: str | Path) -> DictConfig:
    """A copy of a composed config whose Hydra run dir is `output_dir` (what ${hydra:runtime.output_dir} and the
    paths under it resolve to from now on): one config composed once, run in a directory of its own."""
    cfg = copy.deepcopy(cfg)
    with read_write(cfg.hydra), open_dict(cfg):  # HydraConfig made the hydra node it was given read-only
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)  # so ${hydra:...} interpolations resolve
    return cfg


COMPOSE_ERRORS = (HydraException, OmegaConfBaseException, yaml.YAMLError)


def compose_driver(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """conf/<config_name>.yaml (conf/train.yaml, conf/verbs/sweep.yaml, ...) with `overrides`, and its Hydra node
    (`hydra.runtime.choices` tells which group options were picked). A config that does not compose (an unknown
    key or option, bad YAML) is a ConfigError of one line that says what is there instead."""
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=True)
    except COMPOSE_ERRORS as err:
        raise ConfigError(explain(err, config_name, overrides)) from None
    # An optional group (experiment, debug) takes an option it does not have without a word: say so instead.
    folders = [CONF_DIR, *(Path(p.removeprefix("file://")) for p in cfg.hydra.searchpath if p.startswith("file://"))]
    for group in optional_groups(config_name):
        choice = cfg.hydra.runtime.choices.get(group)
        if choice is not None and not any((folder / group / f"{choice}.yaml").is_file() for folder in folders):
            raise ConfigError(no_such_option(group, choice))
    return cfg


def optional_groups(config_name: str) -> list[str]:
    """The groups conf/<config_name>.yaml's defaults list marks `optional`."""
    defaults = yaml.safe_load((CONF_DIR / f"{config_name}.yaml").read_text()).get("defaults") or []
    return [next(iter(d)).removeprefix("optional ") for d in defaults
            if isinstance(d, dict) and next(iter(d)).startswith("optional ")]


def options(group: str) -> list[str]:
    """The options of config group `group` (conf/<group>/*.yaml; a file named _*.yaml holds what options share)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


def override_value(value) -> str:
    """A value as Hydra's override grammar reads it back: null, true, numbers, quoted strings, [lists], {maps}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def no_such_option(group: str, choice: str) -> str:
    return f"{group}={choice}: no such option; the options are {', '.join(options(group))}"


def explain(err: Exception, config_name: str, overrides: Sequence[str]) -> str:
    """Hydra's error on one line, said as what to do: `model=nosuch` names the options, a typo in a key names
    the key it is closest to (Hydra would advise adding it with `+`, which trains with an unused key)."""
    text = hydra_message(err)
    missing = re.search(r"Could not find '([\w/]+)/([^']+)'", text)
    if missing:
        return no_such_option(*missing.groups())
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        parent, _, name = key.rpartition(".")
        known = sibling_keys(config_name, [o for o in overrides if override_key(o) != key], parent)
        match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        where = f" in {parent}" if parent else ""
        if key in KEY_HINTS:
            return f"{key}: no such key{where}: {KEY_HINTS[key]}"
        if match == [name]:  # a section of this command's config, not a group whose options it chooses from
            inner = sibling_keys(config_name, [o for o in overrides if override_key(o) != key], key)
            return f"{key}: not a choice here; set its keys instead: {', '.join(f'{key}.{k}' for k in inner)}"
        if match:
            return f"{key}: no such key{where} (did you mean {'.'.join(filter(None, [parent, match[0]]))}?)"
        if known:
            return f"{key}: no such key{where}; the keys are {', '.join(k for k in known if not k.startswith('_'))}"
        return f"{key}: no such key{where}"
    return text


# Keys a config may lack for a reason worth saying (instead of the keys it has).
KEY_HINTS = {
    "model.drop_path": "this family has no residual blocks; stochastic depth is for resnet20-resnet110, resnet18, "
                       "wrn, densenet and vit",
}


def sibling_keys(config_name: str, overrides: Sequence[str], parent: str) -> list[str]:
    """The keys under `parent` ('' for the top level, where config groups count too), as composed without
    the offending override; [] when that does not compose either."""
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name, overrides=list(overrides))
    except COMPOSE_ERRORS:
        return []
    node = OmegaConf.select(cfg, parent) if parent else cfg
    keys = list(node.keys()) if isinstance(node, DictConfig) else []
    return keys + ([p.name for p in CONF_DIR.iterdir() if p.is_dir()] if not parent else [])


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
