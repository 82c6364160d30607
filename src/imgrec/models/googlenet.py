"""GoogLeNet (Inception-v1) for 28-32 pixel images: Szegedy et al. 2015, "Going Deeper with Convolutions"
(arXiv 1409.4842), Table 1, in the CIFAR layout of kuangliu/pytorch-cifar (models/googlenet.py).

Each Inception module runs four branches side by side and concatenates them: a 1x1 conv, a 1x1 reduction then
3x3, a 1x1 reduction then 5x5, and a 3x3 max-pool then 1x1 projection; every conv is followed by batch norm
(Inception-v2's addition, as in the CIFAR port) and ReLU. The CIFAR layout replaces the ImageNet stem (7x7
stride 2, pools, 3x3) by one 3x3 conv to 192 channels at full resolution and drops the auxiliary classifiers:
modules 3a-3b at 32x32, 4a-4e at 16x16, 5a-5b at 8x8, then global average pooling and one Linear. Unlike the
CIFAR port, which stacks two 3x3 convs in place of the 5x5 branch, the 5x5 branch is the paper's 5x5 conv.
"""

from collections.abc import Sequence

import torch
from torch import nn

# Table 1 of the paper: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) per module; "M" a max-pool.
MODULES = (
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",  # 3a, 3b
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),  # 4a, 4b, 4c
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",  # 4d, 4e
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),  # 5a, 5b
)


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class Inception(nn.Module):
    def __init__(self, in_channels: int, n1x1: int, n3x3_reduce: int, n3x3: int, n5x5_reduce: int, n5x5: int,
                 pool_proj: int):
        super().__init__()
        self.branch1 = conv_bn_relu(in_channels, n1x1, 1)
        self.branch3 = nn.Sequential(conv_bn_relu(in_channels, n3x3_reduce, 1), conv_bn_relu(n3x3_reduce, n3x3, 3))
        self.branch5 = nn.Sequential(conv_bn_relu(in_channels, n5x5_reduce, 1), conv_bn_relu(n5x5_reduce, n5x5, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_bn_relu(in_channels, pool_proj, 1))
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1)


class GoogLeNet(nn.Module):
    def __init__(self, in_shape: Sequence[int], num_classes: int, stem: int = 192, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        stack: list[nn.Module] = [conv_bn_relu(in_shape[0], stem, 3)]
        channels = stem
        for module in MODULES:
            if module == "M":
                stack.append(nn.MaxPool2d(3, stride=2, padding=1))
            else:
                stack.append(Inception(channels, *module))
                channels = stack[-1].out_channels
        self.features = nn.Sequential(*stack)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()  # the paper: 0.4 before its classifier
        self.classifier = nn.Linear(channels, num_classes)  # the only Linear: transfer replaces it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))
