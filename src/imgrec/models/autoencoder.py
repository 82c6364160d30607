"""A convolutional autoencoder: images -> latent vector -> images.

encoder: [conv 3x3 stride 2 -> batch norm -> activation] x len(channels) -> flatten -> linear(latent_dim)
decoder: linear -> activation -> unflatten -> [transposed conv 4x4 stride 2 -> batch norm -> activation]
         x (len(channels) - 1) -> transposed conv 4x4 stride 2 (to the image's channels) -> crop

Each stride-2 conv halves the side (rounding up: 28 -> 14 -> 7, 32 -> 16 -> 8) and each transposed
conv doubles it, so the decoder ends at least as large as the input and is cropped to it exactly.
The decoder returns logits: a sigmoid turns them into [0, 1] pixels (the task does it, so BCE can
use its numerically stable logits form). After Hinton & Salakhutdinov, "Reducing the
dimensionality of data with neural networks", Science 2006 (convolutional form: Masci et al. 2011).
"""

from collections.abc import Sequence

import torch
from torch import nn

from imgrec.models.layers import activation as make_activation

DOWN_KERNEL, UP_KERNEL = 3, 4  # with stride 2 and padding 1: exactly halves / doubles the side


def _halved(size: int, times: int) -> int:
    for _ in range(times):
        size = (size + 1) // 2  # conv k3 s2 p1: ceil(size / 2)
    return size


class CropTo(nn.Module):
    """Keeps the top-left `height` x `width` pixels (the rows/columns past the input are padding's echo)."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.height, : self.width]

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}"


class ConvAutoencoder(nn.Module):
    """`encode(x)` -> (N, latent_dim); `forward(x)` -> reconstruction logits shaped like x.

    `num_classes` is accepted (every imgrec net is built with it) and ignored.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        latent_dim: int = 32,
        channels: Sequence[int] = (32, 64),
        batch_norm: bool = True,
        activation: str = "relu",
    ):
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive integers, got {list(channels)!r}")
        in_channels, height, width = in_shape
        depth = len(channels)
        code_h, code_w = _halved(height, depth), _halved(width, depth)
        flat = channels[-1] * code_h * code_w
        self.latent_dim = latent_dim

        down: list[nn.Module] = []
        previous = in_channels
        for out_channels in channels:
            down += self._block(nn.Conv2d(previous, out_channels, DOWN_KERNEL, 2, 1, bias=not batch_norm),
                                out_channels, batch_norm, activation)
            previous = out_channels
        # The encoder ends in the latent Linear (no activation after it): transfer learning can take
        # `net.encoder` as a pretrained feature extractor and put a classifier head on its output.
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(flat, latent_dim))

        up: list[nn.Module] = [
            nn.Linear(latent_dim, flat),
            make_activation(activation),
            nn.Unflatten(1, (channels[-1], code_h, code_w)),
        ]
        widths = list(reversed(channels))
        for wide, narrow in zip(widths, widths[1:]):
            up += self._block(nn.ConvTranspose2d(wide, narrow, UP_KERNEL, 2, 1, bias=not batch_norm),
                              narrow, batch_norm, activation)
        up += [nn.ConvTranspose2d(channels[0], in_channels, UP_KERNEL, 2, 1), CropTo(height, width)]
        self.decoder = nn.Sequential(*up)

    @staticmethod
    def _block(layer: nn.Module, channels: int, batch_norm: bool, activation: str) -> list[nn.Module]:
        return [layer, *([nn.BatchNorm2d(channels)] if batch_norm else []), make_activation(activation)]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
