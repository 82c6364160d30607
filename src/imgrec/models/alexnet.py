"""AlexNet at CIFAR scale: Krizhevsky, Sutskever and Hinton 2012, "ImageNet Classification with Deep
Convolutional Neural Networks": five conv layers with ReLU, three overlapping 3x3 stride-2 max-pools, and
three fully-connected layers with dropout 0.5 before the first two.

The variant followed is torchvision's `alexnet` (the single-GPU channel widths 64-192-384-256-256 of Krizhevsky
2014, "One weird trick"), scaled to 28-32 pixels: the 11x11 stride-4 stem becomes 5x5 stride 1 and the pools
are padded, so 32 and 28 pixels both end at 4x4, and the 4096-wide hidden layers become `hidden` (default
1024, 1024). No local response normalization (torchvision dropped it too). Default: 7.71M parameters for 10
classes on 3 channels. The best-known CIFAR port, bearpaw/pytorch-classification (models/cifar/alexnet.py,
2.47M parameters, 77.22% on CIFAR-10), keeps the 11x11 stride-4 stem and removes the fully-connected layers.
"""

from collections.abc import Sequence

import torch
from torch import nn

CHANNELS = (64, 192, 384, 256, 256)
KERNELS = (5, 5, 3, 3, 3)
POOL_AFTER = (0, 1, 4)  # conv layers followed by a max-pool (AlexNet: after conv1, conv2 and conv5)


class AlexNet(nn.Module):
    def __init__(self, in_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (1024, 1024),
                 dropout: float = 0.5):
        super().__init__()
        if len(hidden) != 2 or min(hidden) < 1:
            raise ValueError(f"model.hidden: AlexNet has two hidden fully-connected layers, got {list(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        stack: list[nn.Module] = []
        in_channels = in_shape[0]
        for i, (channels, kernel) in enumerate(zip(CHANNELS, KERNELS)):
            stack += [nn.Conv2d(in_channels, channels, kernel, padding=kernel // 2), nn.ReLU()]
            if i in POOL_AFTER:
                stack.append(nn.MaxPool2d(3, stride=2, padding=1))  # overlapping: 3x3 windows, stride 2
            in_channels = channels
        self.features = nn.Sequential(*stack)
        self.pool = nn.AdaptiveAvgPool2d(4)  # 4x4 already for 28 and 32 pixels; any size for others
        self.hidden = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(in_channels * 16, hidden[0]), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
        )
        self.classifier = nn.Linear(hidden[1], num_classes)  # the last Linear: transfer replaces it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(torch.flatten(self.pool(self.features(x)), 1)))
