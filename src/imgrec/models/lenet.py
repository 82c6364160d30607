"""LeNet-5: LeCun, Bottou, Bengio & Haffner 1998, "Gradient-Based Learning Applied to Document Recognition".

conv5x5(6) -> pool -> conv5x5(16) -> pool -> fc120 -> fc84 -> fc(num_classes), as commonly
re-implemented: full C3 connectivity (not the paper's partial table), plain pooling instead of
trainable subsampling, a Linear output instead of RBF units. Images smaller than 32 pixels are
zero-padded so the first conv sees the paper's 32x32 field (MNIST's 28 -> padding 2).
"""

from collections.abc import Sequence

import torch
from torch import nn

from imgrec.models.layers import activation as make_activation

FIELD = 32  # the input size LeNet-5 was designed for
POOLS: dict[str, type[nn.Module]] = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


class LeNet5(nn.Module):
    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        activation: str = "tanh",
        pool: str = "avg",
    ):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"model.pool must be one of {', '.join(POOLS)}, got {pool!r}")
        channels, height, width = in_shape
        padding = ((FIELD - height) // 2 if height < FIELD else 0, (FIELD - width) // 2 if width < FIELD else 0)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=padding),  # C1
            make_activation(activation),
            POOLS[pool](2),  # S2
            nn.Conv2d(6, 16, 5),  # C3
            make_activation(activation),
            POOLS[pool](2),  # S4
            nn.AdaptiveAvgPool2d(5),  # 16x5x5 for a 32x32 field (a no-op then); keeps other sizes working
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),  # C5 (a 5x5 conv over a 5x5 map is this Linear)
            make_activation(activation),
            nn.Linear(120, 84),  # F6
            make_activation(activation),
            nn.Linear(84, num_classes),  # output: the last Linear, which transfer learning replaces
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
