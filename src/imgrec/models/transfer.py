"""A classifier whose backbone comes from an earlier result: an imgrec checkpoint, or timm/ImageNet.

    backbone.checkpoint   /path/x.ckpt | runs:/<run_id> | models:/<name>@<alias> | timm:<model_name>

From an imgrec classifier the backbone is the whole net up to its last linear layer; from an
autoencoder it is the encoder. A new linear head maps the backbone's features to this data's
classes. Images are adapted to the shape the backbone was trained on (grayscale <-> RGB,
28 <-> 32 pixels), so e.g. a Fashion-MNIST backbone can be fine-tuned on CIFAR-10.
"""

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imgrec.tracking.checkpoints import load_net, resolve_checkpoint


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


def timm_backbone(name: str) -> tuple[nn.Module, int, tuple[int, int, int]]:
    try:
        import timm
    except ImportError:
        raise ValueError(f"backbone.checkpoint 'timm:{name}' needs timm: pip install timm") from None
    body = timm.create_model(name, pretrained=True, num_classes=0)  # weights download on first use
    return body, body.num_features, (3, 224, 224)


class TransferNet(nn.Module):
    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        backbone: dict[str, Any],
        tracking_uri: str | None = None,
    ):
        super().__init__()
        source = backbone.get("checkpoint")
        if not source:
            raise ValueError("backbone.checkpoint is required: a .ckpt path, runs:/<run_id> or models:/<name>@<alias>")
        if source.startswith("timm:"):
            body, features, backbone_shape = timm_backbone(source.removeprefix("timm:"))
        else:
            path = resolve_checkpoint(source, tracking_uri, key="model.backbone.checkpoint")
            source_net, spec = load_net(path)
            body, features = split_off_head(source_net)
            backbone_shape = tuple(spec["in_shape"])
        self.backbone = nn.Sequential(InputAdapter(in_shape, backbone_shape), body, nn.Flatten())
        self.head = nn.Linear(features, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))
