"""Batched augmentation: whole (N, C, H, W) float batches, on whatever device they live on.

Each op draws per-sample randomness from torch's RNG (seeded by `seed_everything`) and none
loops over samples in Python, so augmenting a batch costs a few kernel launches.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Each image through its own affine map: `theta` (N, 2, 3) takes an output pixel's (x, y) in [-1, 1] to where
    it is read from (F.affine_grid's convention); bilinear, zeros outside the frame. One batched grid sample."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each (square) image by its angle in radians about its centre (clockwise as displayed), zeros where
    the rotated image leaves the frame."""
    cos, sin, zero = angles.cos(), angles.sin(), torch.zeros_like(angles)
    # affine_grid maps output to input coordinates: the inverse rotation
    return warp(images, torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1))


def random_rotation(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate each image by an angle drawn uniformly from [-degrees, degrees]."""
    if degrees <= 0:
        return images
    angles = (torch.rand(images.shape[0], device=images.device) * 2 - 1) * math.radians(degrees)
    return rotate(images, angles)


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by `padding` and take a random crop of the original size (a random translation)."""
    if padding <= 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=images.device)
    rows = (torch.arange(h, device=images.device).view(1, h, 1) + dy).expand(n, h, w)
    cols = (torch.arange(w, device=images.device).view(1, 1, w) + dx).expand(n, h, w)
    flat_index = (rows * (w + 2 * padding) + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, flat_index).view(n, c, h, w)


def random_hflip(images: torch.Tensor) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < 0.5
    return torch.where(flip, images.flip(3), images)


def cutout(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a random `size` x `size` square in each image (DeVries & Taylor 2017); it may overhang the border."""
    if size <= 0:
        return images
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n, 1, 1), device=images.device)
    cx = torch.randint(0, w, (n, 1, 1), device=images.device)
    ys = torch.arange(h, device=images.device).view(1, h, 1)
    xs = torch.arange(w, device=images.device).view(1, 1, w)
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    if size % 2 == 0:  # an even square is one pixel shorter on the far side
        inside &= (ys - cy < size // 2) & (xs - cx < size // 2)
    return images.masked_fill(inside.unsqueeze(1), 0.0)


def gaussian_noise(images: torch.Tensor, largest: float, pixel_std: torch.Tensor) -> torch.Tensor:
    """Gaussian noise on normalized images, of a standard deviation drawn per image from U(0, largest) in [0, 1] pixel
    units (so the net also sees nearly clean images): the simple baseline for robustness to corruptions."""
    if largest <= 0:
        return images
    sigma = torch.rand(images.shape[0], 1, 1, 1, device=images.device) * largest
    return images + torch.randn_like(images) * sigma / pixel_std.to(images).view(1, -1, 1, 1)


@dataclass(frozen=True)
class Augment:
    """The per-dataset training augmentation (conf/data/*.yaml: `augment`), on normalized images. `noise` and
    `augmix` need the data's normalization (imgrec.data.pixels.Normalization) to work in pixel units."""

    crop_padding: int = 0
    hflip: bool = False
    cutout: int = 0
    rotation: float = 0.0  # degrees, either way
    noise: float = 0.0  # Gaussian noise of std up to this, in [0, 1] pixel units
    augmix: bool = False  # AugMix views for the Jensen-Shannon consistency loss (augmix_views)

    def __call__(self, images: torch.Tensor, normalization=None) -> torch.Tensor:
        images = random_rotation(images, self.rotation)
        images = random_crop(images, self.crop_padding)
        if self.hflip:
            images = random_hflip(images)
        images = cutout(images, self.cutout)
        if self.noise:
            images = gaussian_noise(images, self.noise, normalization.std)
        return images

    def augmix_views(self, images: torch.Tensor, normalization) -> torch.Tensor:
        """(3N, C, H, W): the batch as it is (its flips and crops done: AugMix's reference applies them first),
        then two AugMix views of it (imgrec.data.augmix), for the Jensen-Shannon consistency loss of
        imgrec.tasks.classification."""
        from imgrec.data.augmix import augmix

        pixels = normalization.to_pixels(images)
        return torch.cat([images, normalization(augmix(pixels)), normalization(augmix(pixels))])
