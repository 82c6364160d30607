"""The one geometric primitive every batched augmentation uses: each image through its own affine map."""

import torch
import torch.nn.functional as F


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Each image through its own affine map: `theta` (N, 2, 3) takes an output pixel's (x, y) in [-1, 1] to where
    it is read from (F.affine_grid's convention); bilinear, zeros outside the frame. One batched grid sample."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
