"""A classifier whose backbone comes from an earlier result (an imgrec checkpoint or a timm model).

    model.backbone.checkpoint   /path/x.ckpt | runs:/<run_id> | models:/<name>@<alias> | timm:<model_name>

imgrec.train resolves the checkpoint through imgrec.hub and hands this net the loaded source network and
its spec. From an imgrec classifier the backbone is the whole net up to its last linear layer; from an
autoencoder it is the encoder. A new linear head maps the backbone's features to this data's classes.
Images are adapted to the shape the backbone was trained on (grayscale <-> RGB, 28 <-> 32 pixels), so
e.g. a Fashion-MNIST backbone can be fine-tuned on CIFAR-10.

A transfer checkpoint's own spec holds the source's spec (`source`) in place of its URI, so the net is
rebuilt from the checkpoint alone: an untrained copy of the source, whose weights the checkpoint's replace.
"""

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imgrec import models


class InputAdapter(nn.Module):
    """Maps (N, C, H, W) images to the backbone's (C', H', W'): channel mean or repeat, bilinear resize."""

    def __init__(self, in_shape: Sequence[int], backbone_shape: Sequence[int]):
        super().__init__()
        self.in_channels, self.channels = in_shape[0], backbone_shape[0]
        self.size = tuple(backbone_shape[1:])
        if self.in_channels != self.channels and 1 not in (self.in_channels, self.channels):
            raise ValueError(f"cannot adapt {self.in_channels}-channel images to a {self.channels}-channel backbone")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.in_channels != self.channels:
            images = images.mean(1, keepdim=True) if self.channels == 1 else images.expand(-1, self.channels, -1, -1)
        if images.shape[-2:] != self.size:
            images = F.interpolate(images, size=self.size, mode="bilinear", align_corners=False)
        return images


def split_off_head(net: nn.Module) -> tuple[nn.Module, int]:
    """(the net without its classification layer, the number of features that layer took)."""
    if hasattr(net, "encoder"):  # an autoencoder: its encoder ends in the latent layer
        latent = [m for m in net.encoder.modules() if isinstance(m, nn.Linear)][-1]
        return net.encoder, latent.out_features
    name, last = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return net, last.in_features


class TransferNet(nn.Module):
    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        source: dict[str, Any] | None = None,
        backbone: nn.Module | Any = None,
    ):
        """`source`: the source network's spec (imgrec.models.spec.NetSpec as a dict); `backbone`: the trained source
        network, or anything else (the config's settings, or nothing in a rebuild) for an untrained copy."""
        super().__init__()
        if source is None:
            raise ValueError("backbone.checkpoint is required: a .ckpt path, runs:/<run_id>, "
                             "models:/<name>@<alias> or timm:<name>")
        if not isinstance(backbone, nn.Module):  # a rebuild: the checkpoint's weights replace these
            backbone = models.build(source["model"], source["in_shape"], source["num_classes"])
        body, features = split_off_head(backbone)
        self.backbone = nn.Sequential(InputAdapter(in_shape, source["in_shape"]), body, nn.Flatten())
        self.head = nn.Linear(features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))
