"""VGG with batch norm, CIFAR style: Simonyan & Zisserman 2015, "Very Deep Convolutional Networks
for Large-Scale Image Recognition" (arXiv 1409.1556), with BN after each conv (as torchvision's
vgg*_bn) and, as in the common CIFAR variants (e.g. kuangliu/pytorch-cifar), the 4096-wide
fully-connected layers replaced by global pooling and one Linear(512, num_classes).

`layers` lists the conv stack: an int is a 3x3 conv with that many channels, "M" a 2x2 max-pool.
Configuration A (VGG-11) is the default; VGG-13/16/19 are other lists.
"""

from collections.abc import Sequence

import torch
from torch import nn

POOL = "M"
CONFIG_A = (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL)


class VGG(nn.Module):
    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        layers: Sequence[int | str] = CONFIG_A,
        batch_norm: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        stack: list[nn.Module] = []
        in_channels = in_shape[0]
        for layer in layers:
            if layer == POOL:
                # ceil_mode: odd sizes round up, so 28-pixel inputs go 28-14-7-4-2-1 instead of dying at 7-3-1-0.
                stack.append(nn.MaxPool2d(2, ceil_mode=True))
            elif isinstance(layer, int) and not isinstance(layer, bool) and layer > 0:
                stack.append(nn.Conv2d(in_channels, layer, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    stack.append(nn.BatchNorm2d(layer))
                stack.append(nn.ReLU())
                in_channels = layer
            else:
                raise ValueError(f"model.layers: expected positive channel counts or '{POOL}', got {layer!r}")
        if in_channels == in_shape[0]:
            raise ValueError(f"model.layers has no conv layer: {list(layers)}")
        self.features = nn.Sequential(*stack)
        self.pool = nn.AdaptiveAvgPool2d(1)  # 1x1 already for 28 and 32 pixels; any size for others
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(in_channels, num_classes)  # the only Linear: transfer replaces it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(self.dropout(x))
