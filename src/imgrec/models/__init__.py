"""Plain nn.Modules. Each takes `in_shape` (C, H, W) and `num_classes` from the data and knows nothing of Lightning."""

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import instantiate
from torch import nn


def build(model: Mapping[str, Any], in_shape: Sequence[int], num_classes: int, **parts: Any) -> nn.Module:
    """The network a model config (conf/model/*.yaml, `_partial_: true`) describes, for this data's shape.

    `parts` replace config entries with built objects (e.g. a transfer net's loaded `backbone`).
    `_convert_="all"`: networks get plain lists and dicts, never OmegaConf containers; `_recursive_=False`:
    nested configs stay configs (a transfer net's `source` spec holds a model config of its own).
    """
    build_net = instantiate(model, _convert_="all", _recursive_=False, **parts)
    return build_net(in_shape=tuple(in_shape), num_classes=num_classes)
