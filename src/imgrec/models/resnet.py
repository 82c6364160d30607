"""Residual networks for 28-32 pixel images.

- `CifarResNet`: He et al. 2016, "Deep Residual Learning for Image Recognition" (arXiv 1512.03385),
  section 4.2: a 3x3 conv(16) stem, three stages of n basic blocks with 16/32/64 channels (6n+2 layers),
  parameter-free identity shortcuts that zero-pad channels when the shape changes (option A),
  global average pooling and a fully-connected layer. ResNet-20/32/44/56/110 are depths of it.
- `ResNet`: the general body. With `blocks=[2,2,2,2]` and `widths=[64,128,256,512]` it is the
  ResNet-18 commonly trained on CIFAR (kuangliu/pytorch-cifar): the same 3x3 stride-1 stem without
  max-pooling, projection (1x1 conv + BN) shortcuts. `preact=true` swaps in the pre-activation blocks of
  He et al. 2016b, "Identity Mappings in Deep Residual Networks" (arXiv 1603.05027).

The classifier is the single `fc` layer, registered last: transfer learning replaces the last Linear.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from imgrec.models.layers import DropPath, drop_path_rates

SHORTCUTS = ("projection", "zero_pad")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)  # BN follows: no bias


class ZeroPadShortcut(nn.Module):
    """Option A: subsample spatially and append zero channels, so the shortcut has no parameters."""

    def __init__(self, extra_channels: int, stride: int):
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # pads dims from the last: W, H, then C

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}"


def make_shortcut(kind: str, in_channels: int, out_channels: int, stride: int, batch_norm: bool) -> nn.Module:
    """Identity where the shape is kept; otherwise option A (zero_pad) or option B (1x1 projection)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "zero_pad":
        if out_channels < in_channels:
            raise ValueError(f"model.shortcut=zero_pad cannot shrink {in_channels} channels to {out_channels}")
        return ZeroPadShortcut(out_channels - in_channels, stride)
    projection = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
    # A pre-activation block adds the projection to an un-normalized stream: no BN there (He et al. 2016b).
    return nn.Sequential(projection, nn.BatchNorm2d(out_channels)) if batch_norm else projection


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-[dropout]-conv3x3-BN, plus the shortcut, then ReLU (He et al. 2016a)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str, dropout: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.drop_path = DropPath(drop_path)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, batch_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(F.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return F.relu(self.drop_path(out) + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-[dropout]-conv3x3, plus the shortcut (He et al. 2016b).

    Where the shape changes, the shortcut takes the pre-activated input (as in the authors' code
    and in Wide ResNets); elsewhere it is the untouched identity. With dropout this is the wide
    basic block of Zagoruyko & Komodakis 2016.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str, dropout: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.drop_path = DropPath(drop_path)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv2 = conv3x3(out_channels, out_channels)
        self.shortcut = make_shortcut(shortcut, in_channels, out_channels, stride, batch_norm=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return self.drop_path(out) + skip


def kaiming_init(net: nn.Module) -> None:
    """He et al. 2015 init for convs (std sqrt(2/fan), the ResNet papers' choice); BN starts as identity."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _positive_ints(values: Sequence[int], key: str) -> list[int]:
    values = list(values)
    if not values or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"{key} must be a non-empty list of positive integers, got {values}")
    return values


class ResNet(nn.Module):
    """stem conv3x3 -> stages of residual blocks (first stride 1, then 2) -> global avg pool -> fc.

    `blocks[i]` blocks of `widths[i]` channels per stage; `stem_width` defaults to `widths[0]`.
    Standard blocks get BN-ReLU after the stem; pre-activation blocks get BN-ReLU after the last stage.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        blocks: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int | None = None,
        preact: bool = False,
        shortcut: str = "projection",
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ):
        """`drop_path`: stochastic depth, the last block's rate (linear in depth from 0)."""
        super().__init__()
        blocks = _positive_ints(blocks, "model.blocks")
        widths = _positive_ints(widths, "model.widths")
        if len(blocks) != len(widths):
            raise ValueError(f"model.blocks and model.widths need one entry per stage, got {blocks} and {widths}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"model.shortcut must be one of {', '.join(SHORTCUTS)}, got {shortcut!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        stem_width = widths[0] if stem_width is None else stem_width

        block = PreActBlock if preact else BasicBlock
        self.stem = (
            conv3x3(in_shape[0], stem_width)
            if preact  # the first block pre-activates
            else nn.Sequential(conv3x3(in_shape[0], stem_width), nn.BatchNorm2d(stem_width), nn.ReLU())
        )
        stages: list[nn.Module] = []
        in_channels = stem_width
        rates = iter(drop_path_rates(drop_path, sum(blocks)))
        for i, (n, width) in enumerate(zip(blocks, widths)):
            strides = [1 if i == 0 else 2] + [1] * (n - 1)  # each later stage halves the size once
            stage = []
            for stride in strides:
                stage.append(block(in_channels, width, stride, shortcut, dropout, next(rates)))
                in_channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        # Pre-activation leaves the last block's sum un-normalized: one BN-ReLU before pooling.
        self.final_act = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU()) if preact else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)  # any input size: 28 and 32 pixels alike
        self.fc = nn.Linear(in_channels, num_classes)  # last: transfer learning replaces it
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_act(self.stages(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class CifarResNet(ResNet):
    """ResNet-{20,32,44,56,110} of He et al. 2016a, section 4.2: depth = 6n + 2, option-A shortcuts."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, depth: int = 20, drop_path: float = 0.0):
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"model.depth must be 6n+2 for n >= 1 (20, 32, 44, 56, 110, ...), got {depth!r}")
        n = (depth - 2) // 6
        super().__init__(in_shape, num_classes, blocks=[n] * 3, widths=[16, 32, 64], shortcut="zero_pad",
                         drop_path=drop_path)
        self.depth = depth
