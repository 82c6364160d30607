"""A sweep's search space (conf/sweep/NAME.yaml `space`) and how sampled values become overrides."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from imgrec.errors import ConfigError, one_line


@dataclass(frozen=True)
class Param:
    key: str  # a config key (`optimizer.lr`) or a config group (`model`): both become `key=value`
    distribution: BaseDistribution
    when: dict[str, list]  # sampled only if each named key (sampled earlier, or in the base config) has one of these values


def parse_space(space: DictConfig) -> list[Param]:
    params = []
    for key, spec in space.items():
        if spec is None:  # `sweep.space.KEY=null` drops a parameter
            continue
        spec = OmegaConf.to_container(spec, resolve=True)
        kind, when = spec.pop("type", None), spec.pop("when", None) or {}
        try:
            if kind == "categorical":
                distribution = CategoricalDistribution([encode_choice(c) for c in spec.pop("choices")])
            elif kind in ("float", "log-float"):
                distribution = FloatDistribution(float(spec.pop("low")), float(spec.pop("high")),
                                                 log=spec.pop("log", kind == "log-float"), step=spec.pop("step", None))
            elif kind == "int":
                distribution = IntDistribution(int(spec.pop("low")), int(spec.pop("high")),
                                               log=spec.pop("log", False), step=spec.pop("step", 1))
            else:
                raise ValueError(f"type must be float, log-float, int or categorical, got {kind!r}")
            if spec:
                raise ValueError(f"unknown keys {sorted(spec)}")
        except (KeyError, ValueError, TypeError) as err:
            raise ConfigError(f"sweep.space.{key}: {one_line(err)}") from None
        params.append(Param(key, distribution, {k: v if isinstance(v, list) else [v] for k, v in when.items()}))
    if not params:
        raise ConfigError("sweep.space is empty: name at least one config key and its distribution")
    return params


def encode_choice(choice: Any) -> Any:
    """Optuna's categorical choices are scalars: a list or dict choice travels as its override text."""
    return override_value(choice) if isinstance(choice, (list, dict)) else choice


def override_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, ListConfig)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if text[:1] in "[{" or re.fullmatch(r"[\w.:/\-]+", text):
        return text  # list/dict literals (encoded choices) and plain words pass as they are
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def suggest(trial: optuna.Trial | optuna.trial.FixedTrial, params: list[Param], base: Callable[[str], Any]) -> dict:
    """Sample each parameter whose `when` holds; returns {key: value} in the space's order."""
    values: dict[str, Any] = {}
    for p in params:
        def holds(key: str, allowed: list) -> bool:
            actual = values[key] if key in values else base(key)
            return override_value(actual) in {override_value(a) for a in allowed}

        if not all(holds(k, allowed) for k, allowed in p.when.items()):
            continue
        d = p.distribution
        if isinstance(d, CategoricalDistribution):
            values[p.key] = trial.suggest_categorical(p.key, d.choices)
        elif isinstance(d, FloatDistribution):
            values[p.key] = trial.suggest_float(p.key, d.low, d.high, log=d.log, step=d.step)
        else:
            values[p.key] = trial.suggest_int(p.key, d.low, d.high, log=d.log, step=d.step)
    return values


def first_point(params: list[Param]) -> dict:
    """A point of the space (first choice, lowest value), to check the keys before any trial runs."""
    return {p.key: p.distribution.choices[0] if isinstance(p.distribution, CategoricalDistribution)
            else p.distribution.low for p in params}
