"""DenseNet-BC for 28-32 pixel images: Huang et al. 2017, "Densely Connected Convolutional Networks"
(arXiv 1608.06993), the CIFAR layout of section 3 and Table 2.

Three dense blocks of (depth - 4) / 6 bottleneck layers (BN-ReLU-conv1x1 to 4k channels, BN-ReLU-conv3x3 to k),
each layer's k new channels concatenated to everything before it; transitions (BN-ReLU-conv1x1 halving the
channels, `compression` 0.5, then 2x2 average pooling) between blocks; a 3x3 stem of 2k channels; global
average pooling and one Linear. L=100, k=12 has 0.77M parameters (the paper prints 0.8M) and 4.51% CIFAR-10
error with augmentation (Table 2).
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from imgrec.models.layers import DropPath, drop_path_rates


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k): the bottleneck layer ("-B"), its k new feature maps."""

    def __init__(self, in_channels: int, growth: int, drop_path: float = 0.0):
        super().__init__()
        self.drop_path = DropPath(drop_path)  # stochastic depth: a sample's new feature maps dropped (zeroed)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([x, self.drop_path(new)], dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 to `out_channels` (the compression, "-C"), then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.AvgPool2d(2, ceil_mode=True))  # ceil: 28 pixels go 28-14-7, 32 go 32-16-8


class DenseNet(nn.Module):
    def __init__(self, in_shape: Sequence[int], num_classes: int, depth: int = 100, growth: int = 12,
                 compression: float = 0.5, drop_path: float = 0.0):
        """`drop_path`: stochastic depth, the last layer's rate (linear in depth from 0)."""
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"model.depth must be 6n+4 with n >= 1 (DenseNet-BC: 3 blocks of n bottleneck layers, "
                             f"2 convs each), got {depth}")
        if growth < 1:
            raise ValueError(f"model.growth must be >= 1, got {growth}")
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"model.compression must be in (0, 1], got {compression}")
        layers_per_block = (depth - 4) // 6
        channels = 2 * growth
        rates = iter(drop_path_rates(drop_path, 3 * layers_per_block))
        stack: list[nn.Module] = [nn.Conv2d(in_shape[0], channels, 3, padding=1, bias=False)]
        for block in range(3):
            for _ in range(layers_per_block):
                stack.append(DenseLayer(channels, growth, next(rates)))
                channels += growth
            if block < 2:
                out_channels = math.floor(compression * channels)
                stack.append(Transition(channels, out_channels))
                channels = out_channels
        stack += [nn.BatchNorm2d(channels), nn.ReLU()]
        self.features = nn.Sequential(*stack)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)  # the only Linear: transfer replaces it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
