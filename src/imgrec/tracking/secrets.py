"""What never reaches MLflow: the values under `storage_options` (data.storage_options: fsspec's credentials and
endpoints for data=stream and imgrec shard). A run's params show them as <redacted>, and every text a run logs
(its command line, its Hydra files, the error it failed with) has their values replaced, wherever they appear."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

SECRET_KEYS = ("storage_options",)  # a key of this name, at any depth: everything under it is secret
REDACTED = "<redacted>"
_values: set[str] = set()  # this process's secrets (one process, one config)


def is_secret(key: str) -> bool:
    return any(part in SECRET_KEYS for part in key.split("."))


def register(cfg: DictConfig | Mapping) -> None:
    """Remember the config's secret values, to be taken out of every text logged from now on."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)

    def walk(node: Any, secret: bool) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, secret or key in SECRET_KEYS)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value, secret)
        elif secret and node is not None and len(str(node)) >= 4:
            _values.add(str(node))

    walk(container, False)


def redact(text: str) -> str:
    for value in sorted(_values, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def redact_params(params: dict[str, object]) -> dict[str, object]:
    return {key: REDACTED if is_secret(key) else value for key, value in params.items()}


def without_secrets(node: Any) -> Any:
    """A plain config (dicts, lists) with every secret subtree emptied: what a checkpoint keeps of it."""
    if isinstance(node, Mapping):
        return {key: ({} if key in SECRET_KEYS else without_secrets(value)) for key, value in node.items()}
    if isinstance(node, list):
        return [without_secrets(value) for value in node]
    return node


def redacted_copy(folder: Path) -> Path:
    """`folder` itself when it holds no secret, else a copy of its text files beside it (`<folder>_redacted`: a
    queued upload reads it later) with the secrets replaced."""
    files = [f for f in folder.iterdir() if f.is_file()]
    if not any(value in f.read_text(errors="replace") for f in files for value in _values):
        return folder
    copy = folder.with_name(folder.name + "_redacted")
    copy.mkdir(exist_ok=True)
    for file in files:
        (copy / file.name).write_text(redact(file.read_text(errors="replace")))
    return copy
