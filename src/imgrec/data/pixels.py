"""Images in [0, 1] units -> normalized (zero mean, unit variance per channel, the training split's statistics):
the first step of every network, in training (imgrec.tasks.base.Task) and in use (imgrec.hub.PixelModel), so that
batches, attacks, exports and served models all speak [0, 1] pixels.
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

    def stats(self) -> tuple[list[float], list[float]]:
        """(mean, std) as plain lists, for a checkpoint's spec."""
        return self.mean.flatten().tolist(), self.std.flatten().tolist()

    def extra_repr(self) -> str:
        mean, std = self.stats()
        return f"mean={[round(m, 4) for m in mean]}, std={[round(s, 4) for s in std]}"
