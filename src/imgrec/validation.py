"""The composed config, checked before anything is built or tracked: one place, one line per mistake.

- The fixed keys every command shares (seed, data.*, optimizer.lr, logger.*, ...; docs/architecture.md) have the
  types and ranges below.
- Every `trainer.*` key is an argument of lightning.Trainer, of the type its signature declares.
- Every key of a node with a `_target_` (model, data, task, optimizer, callbacks, ...) is an argument
  of that target: a typo names the key and the closest argument.

train() calls `validate` first, so a bad value exits 1 with no MLflow run; drivers call it on every
config they compose, before the first training starts.
"""

import difflib
import functools
import inspect
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from pydantic import ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter, ValidationError

from imgrec.errors import ConfigError

HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}
PositiveInt = Annotated[StrictInt, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
# Lightning's devices: a count, -1 (all), "auto", a list of device indices, or "2" / "0,1" (a count or indices).
Devices = (PositiveInt | Literal[-1, "auto", "-1"]
           | Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]
           | Annotated[StrictStr, Field(pattern=r"^([1-9][0-9]*|[0-9]+,|[0-9]+(,[0-9]+)+,?)$")])


@dataclass(frozen=True)
class Rule:
    type: Any
    expected: str


FIXED_KEYS = {
    "seed": Rule(StrictInt | None, "an integer or null"),
    "ckpt_path": Rule(StrictStr | None, "a checkpoint path, last, or null"),
    "test": Rule(StrictBool, "true or false"),
    "compile": Rule(StrictBool, "true or false"),
    "memory_format": Rule(Literal["auto", "channels_last", "contiguous_format"],
                          "one of auto, channels_last, contiguous_format"),
    "data.root": Rule(StrictStr | None, "a folder or null"),
    "data.download": Rule(StrictBool, "true or false"),
    "data.batch_size": Rule(PositiveInt, "a positive integer"),
    "data.eval_batch_size": Rule(PositiveInt, "a positive integer"),
    "data.num_workers": Rule(Annotated[StrictInt, Field(ge=0)], "an integer >= 0"),
    "data.val_size": Rule(PositiveInt | Fraction, "a positive number of images, or a fraction between 0 and 1"),
    "data.train_size": Rule(PositiveInt | None, "a positive integer or null"),
    "data.labels_per_class": Rule(PositiveInt | None, "a positive integer or null"),
    "data.split_seed": Rule(StrictInt, "an integer"),
    "data.folds": Rule(Annotated[StrictInt, Field(ge=2)] | None, "an integer >= 2 or null"),
    "data.fold": Rule(Annotated[StrictInt, Field(ge=0)], "an integer >= 0"),
    "optimizer.lr": Rule(Annotated[float, Field(gt=0)] | Literal["auto"], "a number > 0 or auto (the finder's)"),
    "optimizer.weight_decay": Rule(Annotated[float, Field(ge=0)], "a number >= 0"),
    "trainer.devices": Rule(Devices, "a positive number of devices, -1 (all), auto, or a list of device indices"),
    "logger.tracking_uri": Rule(Annotated[StrictStr, Field(min_length=1)], "a tracking URI"),
    "logger.experiment_name": Rule(Annotated[StrictStr, Field(min_length=1)], "a non-empty name"),
}
STRICT = ConfigDict(strict=True, arbitrary_types_allowed=True)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one line, naming the key) at the first mistake."""
    for key, rule in FIXED_KEYS.items():
        if OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING:
            _check(key, OmegaConf.select(cfg, key), rule.type, rule.expected)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    hints = _trainer_hints()
    for key, value in trainer.items():
        if key in HYDRA_KEYS:
            continue
        if key not in hints:
            raise ConfigError(f"trainer.{key} is not an argument of lightning.Trainer{_closest(key, hints)}")
        if key == "precision" and value == "auto":  # imgrec's: train() picks it for the hardware (imgrec.hardware)
            continue
        _check(f"trainer.{key}", value, hints[key], describe(hints[key]))
    for path, node in _targets(OmegaConf.to_container(cfg, resolve=False)):
        accepted = _arguments(node["_target_"])
        if accepted is None:
            continue
        for key in node:
            if key not in HYDRA_KEYS and key not in accepted:
                raise ConfigError(f"{path}.{key} is not an argument of {node['_target_']}{_closest(key, accepted)}")
    _check_task_and_data(cfg)


def _check_task_and_data(cfg: DictConfig) -> None:
    """data.labels_per_class against data.train_size, and it and data.augment.augmix against what the task learns from
    (Task.learns_from)."""
    per_class = OmegaConf.select(cfg, "data.labels_per_class")
    if per_class is not None and OmegaConf.select(cfg, "data.train_size") is not None:
        raise ConfigError("data.labels_per_class and data.train_size both pick the labeled training images: set one "
                          "(labels_per_class draws N per class and keeps the rest as unlabeled images)")
    target = OmegaConf.select(cfg, "task._target_")
    try:
        learns_from = getattr(get_object(target), "learns_from", None) if target else None
    except Exception:  # instantiation will name the problem
        return
    task = f"task={OmegaConf.select(cfg, 'hydra.runtime.choices.task', default=None) or target}"
    if learns_from == "labeled+unlabeled" and per_class is None:
        raise ConfigError(f"{task} learns from unlabeled images too: set data.labels_per_class=N (N labeled images "
                          "per class; the rest of the training split are its unlabeled images)")
    if learns_from == "images" and per_class is not None:
        raise ConfigError(f"data.labels_per_class: {task} trains on every training image without labels; a labeled "
                          "subset would only take images away (leave it null)")
    mixing = [k for k in ("mixup", "cutmix") if OmegaConf.select(cfg, f"data.augment.{k}", default=0)]
    if mixing:
        key = f"data.augment.{mixing[0]}"
        soft = getattr(get_object(target), "takes_soft_targets", False) if target else False
        if not soft:
            raise ConfigError(f"{key}: mixed images have soft targets, which only a classifier's loss takes; {task} "
                              "does not")
        if OmegaConf.select(cfg, "data.augment.augmix", default=False):
            raise ConfigError(f"{key} and data.augment.augmix: each has its own training loss; choose one")
        if OmegaConf.select(cfg, "task.adversarial.method") is not None:
            raise ConfigError(f"{key} and task.adversarial.method: adversarial training takes hard labels; choose one")
    if OmegaConf.select(cfg, "data.augment.augmix", default=False):
        if learns_from != "labeled":
            raise ConfigError(f"data.augment.augmix: its consistency loss is a classifier's; {task} does not train on "
                              "AugMix views")
        if OmegaConf.select(cfg, "task.adversarial.method") is not None:
            raise ConfigError("data.augment.augmix and task.adversarial.method: each has its own training loss; "
                              "choose one")


_MISSING = object()


def _check(key: str, value: Any, annotation: Any, expected: str) -> None:
    try:
        TypeAdapter(annotation, config=STRICT).validate_python(value)
    except ValidationError:
        raise ConfigError(f"{key} must be {expected}, got {value!r}") from None


@functools.cache
def _trainer_hints() -> dict[str, Any]:
    import lightning

    hints = typing.get_type_hints(lightning.Trainer.__init__)
    hints.pop("return", None)
    return hints


def _targets(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every dict with a `_target_` in the (unresolved) config, with its dotted path; Hydra's own node skipped."""
    if isinstance(node, dict):
        if "_target_" in node and path:
            yield path, node
        for key, value in node.items():
            if key != "hydra" or path:
                yield from _targets(value, f"{path}.{key}" if path else str(key))


@functools.cache
def _arguments(target: str) -> frozenset[str] | None:
    """The keyword arguments `target` takes (its __init__'s, and its bases' where it passes **kwargs on);
    None when it takes any keyword or cannot be inspected."""
    try:
        obj = get_object(target)
    except Exception:  # instantiation will name the problem
        return None
    functions = [cls.__init__ for cls in obj.__mro__ if "__init__" in vars(cls)] if inspect.isclass(obj) else [obj]
    accepted: set[str] = set()
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return None
        accepted |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return frozenset(accepted)
    return None  # **kwargs all the way up (object.__init__ never takes them)


def _closest(key: str, known) -> str:
    match = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def describe(annotation: Any) -> str:
    """A type annotation in words: Optional[int] -> 'an integer or null'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        words = [describe(a) for a in args if a is not type(None)]
        literals = [w for w in words if w.startswith("one of ")]
        words = [w for w in words if not w.startswith("one of ")]
        if literals:  # several Literal groups read as one list
            words.append("one of " + ", ".join(w.removeprefix("one of ") for w in literals))
        return " or ".join(words + (["null"] if type(None) in args else []))
    if origin in (list, tuple, typing.Sequence):
        return f"a list of {describe(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    if origin is dict:
        return "a mapping"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", timedelta: "a duration"}
    return names.get(annotation, f"a {getattr(annotation, '__name__', annotation)}")
