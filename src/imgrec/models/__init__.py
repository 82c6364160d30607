"""Plain nn.Modules. Each takes `in_shape` (C, H, W) and `num_classes` from the data and knows nothing of Lightning."""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
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


def check_input(net: nn.Module, in_shape: Sequence[int], name: str) -> None:
    """ValueError, in one line, when `net` cannot take images of `in_shape` (a family whose layers shrink a small image
    to nothing, or fix the size): found by one forward pass of two blank images, before anything trains."""
    if hasattr(net, "generator") or hasattr(net, "encode"):  # GANs and autoencoders check their own sizes
        return
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(2, *in_shape))
    except (RuntimeError, ValueError) as err:
        shape = "x".join(map(str, in_shape))
        raise ValueError(f"model={name} cannot take {shape} images ({' '.join(str(err).split())[:200]}); "
                         "choose another data.image_size or model") from None
    finally:
        net.train(was_training)
