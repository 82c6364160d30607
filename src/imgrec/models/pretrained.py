"""An ImageNet classifier from timm as an imgrec network (`timm:<name>` in imgrec.hub).

timm is optional and not installed by default: its torchvision dependency pulls a CUDA torch.
"""

from collections.abc import Sequence

import torch
from torch import nn


class TimmNet(nn.Module):
    def __init__(self, in_shape: Sequence[int], num_classes: int, name: str, pretrained: bool = False):
        super().__init__()
        import timm

        # pretrained=True downloads the weights on first use; a rebuilt checkpoint loads its own instead
        self.net = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_shape[0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)
