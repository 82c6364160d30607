"""Wide Residual Networks: Zagoruyko & Komodakis 2016, "Wide Residual Networks" (arXiv 1605.07146).

WRN-d-k: a 3x3 conv(16) stem, three stages of n = (d-4)/6 pre-activation "wide basic" blocks with
16k/32k/64k channels (dropout between the two convs), 1x1 conv projection shortcuts where the shape
changes, BN-ReLU, global average pooling and a fully-connected layer. WRN-28-10 has 36.5M parameters;
the paper trains it on CIFAR with dropout 0.3.

The wide basic block is the pre-activation block of resnet.py with dropout, so the body is shared.
"""

from collections.abc import Sequence

from imgrec.models.resnet import ResNet

STEM_WIDTH = 16


class WideResNet(ResNet):
    def __init__(
        self, in_shape: Sequence[int], num_classes: int, depth: int = 28, width: int = 10, dropout: float = 0.0,
        drop_path: float = 0.0,
    ):
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"model.depth must be 6n+4 for n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"model.width must be a positive integer (the widening factor k), got {width!r}")
        n = (depth - 4) // 6
        super().__init__(
            in_shape,
            num_classes,
            blocks=[n] * 3,
            widths=[16 * width, 32 * width, 64 * width],
            stem_width=STEM_WIDTH,
            preact=True,
            shortcut="projection",
            dropout=dropout,
            drop_path=drop_path,
        )
        self.depth, self.width = depth, width
