"""Pixels one way: images in [0, 1] units <-> normalized (zero mean, unit variance per channel).

The datamodule normalizes every batch with its training split's statistics; a task that needs pixels
(a reconstruction target, a GAN's tanh range, an attack's epsilon) undoes it with the same object, and
`imgrec.hub.load_model` puts one in front of a trained network so that it takes [0, 1] images.
"""

from collections.abc import Sequence

import torch
from torch import nn


class Normalization(nn.Module):
    """Per-channel (x - mean) / std. Its buffers are not saved: checkpoints carry the statistics in their spec."""

    def __init__(self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor):
        super().__init__()
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        self.register_buffer("mean", mean.detach().clone().view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.detach().clone().view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] or float [0, 1] images -> normalized float images."""
        pixels = images.float().div_(255) if images.dtype == torch.uint8 else images
        return (pixels - self.mean.to(pixels)) / self.std.to(pixels)

    def to_pixels(self, images: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Normalized images -> [0, 1] pixels (clamped by default: augmentation may step slightly outside)."""
        pixels = images * self.std.to(images) + self.mean.to(images)
        return pixels.clamp(0.0, 1.0) if clamp else pixels

    def to_symmetric(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images -> [-1, 1] pixels (a generator's tanh range)."""
        return self.to_pixels(images) * 2 - 1

    def stats(self) -> tuple[list[float], list[float]]:
        """(mean, std) as plain lists, for a checkpoint's spec."""
        return self.mean.flatten().tolist(), self.std.flatten().tolist()

    def extra_repr(self) -> str:
        mean, std = self.stats()
        return f"mean={[round(m, 4) for m in mean]}, std={[round(s, 4) for s in std]}"
