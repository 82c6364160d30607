"""MobileNetV2 for 28-32 pixel images: Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks" (arXiv 1801.04381), Table 2, with the CIFAR strides of kuangliu/pytorch-cifar (models/mobilenetv2.py):
a stride-1 stem and stride 1 in the second stage, so 32 pixels reach the last stages at 4x4 instead of 1x1.

Each inverted residual expands to t x its input channels (1x1 conv), filters each channel on its own (3x3
depthwise conv), and projects back down with a linear 1x1 conv (no ReLU: the "linear bottleneck"); a shortcut
adds the input where the shape is kept. `width` multiplies every layer's channels (the paper's alpha), rounded
to multiples of 8 as in the paper's code; the 1280-channel last conv is not thinned below 1280.
"""

from collections.abc import Sequence

import torch
from torch import nn

# (expansion t, output channels c, blocks n, stride of the first block s): Table 2, CIFAR strides
STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def divisible(channels: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor`, never more than 10% down (the paper's `_make_divisible`)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers, nn.ReLU6()) if relu else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        expand = [conv_bn(in_channels, hidden, 1)] if expansion != 1 else []
        self.block = nn.Sequential(*expand, conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                   conv_bn(hidden, out_channels, 1, relu=False))
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    def __init__(self, in_shape: Sequence[int], num_classes: int, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        if width <= 0:
            raise ValueError(f"model.width must be > 0, got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        channels = divisible(32 * width)
        stack: list[nn.Module] = [conv_bn(in_shape[0], channels, 3)]  # stride 1 for 32 pixels (ImageNet: 2)
        for expansion, out, blocks, stride in STAGES:
            out = divisible(out * width)
            for i in range(blocks):
                stack.append(InvertedResidual(channels, out, stride if i == 0 else 1, expansion))
                channels = out
        last = divisible(1280 * max(1.0, width))
        stack.append(conv_bn(channels, last, 1))
        self.features = nn.Sequential(*stack)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(last, num_classes)  # the only Linear: transfer replaces it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))
