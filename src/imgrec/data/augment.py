"""Batched augmentation: whole (N, C, H, W) batches of [0, 1] pixels, on whatever device they live on.

Each op draws per-sample randomness from torch's RNG (seeded by `seed_everything`) and none
loops over samples in Python, so augmenting a batch costs a few kernel launches. What an op uncovers (crop padding,
cutout, rotated corners) is filled with `fill`, the data's mean pixel per channel: zero once the network's first
layer has normalized it, as these ops filled when they ran on normalized images.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imgrec.data.decode import center_crop


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Each image through its own affine map: `theta` (N, 2, 3) takes an output pixel's (x, y) in [-1, 1] to where
    it is read from (F.affine_grid's convention); bilinear, zeros outside the frame. One batched grid sample."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate(images: torch.Tensor, angles: torch.Tensor, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Rotate each (square) image by its angle in radians about its centre (clockwise as displayed), `fill` where
    the rotated image leaves the frame."""
    cos, sin, zero = angles.cos(), angles.sin(), torch.zeros_like(angles)
    # affine_grid maps output to input coordinates: the inverse rotation
    theta = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)
    return warp(images - fill, theta) + fill


def random_rotation(images: torch.Tensor, degrees: float, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Rotate each image by an angle drawn uniformly from [-degrees, degrees]."""
    if degrees <= 0:
        return images
    angles = (torch.rand(images.shape[0], device=images.device) * 2 - 1) * math.radians(degrees)
    return rotate(images, angles, fill)


def random_resized_crop(images: torch.Tensor, size: tuple[int, int], scale: tuple[float, float],
                        ratio: tuple[float, float], attempts: int = 10) -> torch.Tensor:
    """torchvision's RandomResizedCrop on a batch: each image's crop covers a share of its area drawn from `scale`,
    of an aspect ratio drawn log-uniformly from `ratio`, at a random place (the first of `attempts` draws that fits;
    else the central crop of the nearest allowed ratio), resized bilinearly to `size` (h, w). One grid sample."""
    n, _, height, width = images.shape
    device = images.device
    area = height * width * torch.empty(n, attempts, device=device).uniform_(*scale)
    log_ratio = torch.empty(n, attempts, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    crop_w = (area * log_ratio.exp()).sqrt().round()
    crop_h = (area / log_ratio.exp()).sqrt().round()
    fits = (crop_w >= 1) & (crop_w <= width) & (crop_h >= 1) & (crop_h <= height)
    first = fits.float().argmax(dim=1, keepdim=True)  # the first attempt that fits (0 when none does)
    crop_w, crop_h = crop_w.gather(1, first).squeeze(1), crop_h.gather(1, first).squeeze(1)
    # none fits: the whole image, narrowed to the nearest allowed aspect ratio (torchvision's fallback)
    aspect = width / height
    whole_w = width if aspect <= ratio[1] else round(height * ratio[1])
    whole_h = height if aspect >= ratio[0] else round(width / ratio[0])
    none = ~fits.any(dim=1)
    crop_w, crop_h = crop_w.masked_fill(none, whole_w), crop_h.masked_fill(none, whole_h)
    top = (torch.rand(n, device=device) * (height - crop_h + 1)).floor()
    left = (torch.rand(n, device=device) * (width - crop_w + 1)).floor()
    top, left = top.masked_fill(none, 0) + none * (height - crop_h) // 2, left.masked_fill(none, 0) + none * (width - crop_w) // 2
    # output x in [-1, 1] reads input x at the crop's centre + x * its half-width (affine_grid, align_corners=False)
    zero = torch.zeros(n, device=device)
    theta = torch.stack([torch.stack([crop_w / width, zero, (2 * left + crop_w) / width - 1], 1),
                         torch.stack([zero, crop_h / height, (2 * top + crop_h) / height - 1], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), [n, images.shape[1], *size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_crop(images: torch.Tensor, padding: int, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Pad by `padding` with `fill` and take a random crop of the original size (a random translation)."""
    if padding <= 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images - fill, (padding,) * 4) + fill
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


def cutout(images: torch.Tensor, size: int, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Fill a random `size` x `size` square in each image with `fill` (DeVries & Taylor 2017, who cut out on
    normalized images: the mean); it may overhang the border."""
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
    return torch.where(inside.unsqueeze(1), torch.as_tensor(fill, dtype=images.dtype, device=images.device), images)


def gaussian_noise(images: torch.Tensor, largest: float) -> torch.Tensor:
    """Gaussian noise of a standard deviation drawn per image from U(0, largest) (so the net also sees nearly clean
    images), not clipped: the simple baseline for robustness to corruptions."""
    if largest <= 0:
        return images
    sigma = torch.rand(images.shape[0], 1, 1, 1, device=images.device) * largest
    return images + torch.randn_like(images) * sigma


@dataclass(frozen=True)
class Augment:
    """The data's training augmentation (conf/data/*.yaml: `augment`), on [0, 1] pixels at their stored size, to the
    network's size: a random resized crop (`random_resized_crop`: {scale: [a, b], ratio: [c, d]}; null: the central
    crop), then the rest in this order."""

    crop_padding: int = 0
    hflip: bool = False
    cutout: int = 0
    rotation: float = 0.0  # degrees, either way
    noise: float = 0.0  # Gaussian noise of std up to this, in [0, 1] pixel units
    augmix: bool = False  # AugMix views for the Jensen-Shannon consistency loss (augmix_views)
    random_resized_crop: dict | None = None  # {scale: [0.08, 1.0], ratio: [0.75, 1.3333]}: torchvision's defaults

    def __post_init__(self):
        crop = self.random_resized_crop
        if crop is not None:
            if not isinstance(crop, Mapping) or set(crop) - {"scale", "ratio"}:
                raise TypeError(f"random_resized_crop takes scale and ratio (two numbers each) or null, got {crop!r}")
            scale, ratio = tuple(crop.get("scale", (0.08, 1.0))), tuple(crop.get("ratio", (3 / 4, 4 / 3)))
            if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1 or len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
                raise TypeError(f"random_resized_crop: scale within (0, 1] and a positive ratio range, low to high, "
                                f"got scale {list(scale)}, ratio {list(ratio)}")
            object.__setattr__(self, "random_resized_crop", {"scale": scale, "ratio": ratio})

    def __call__(self, images: torch.Tensor, size: tuple[int, int] | None = None,
                 fill: torch.Tensor | float = 0.0) -> torch.Tensor:
        """`size`: the network's (h, w) (None: the images' own); `fill`: the mean pixel, (1, C, 1, 1) or (C,)."""
        size = tuple(images.shape[-2:]) if size is None else tuple(size)
        if torch.is_tensor(fill):
            fill = fill.to(images).view(1, -1, 1, 1)
        if self.random_resized_crop is not None:
            images = random_resized_crop(images, size, **self.random_resized_crop)
        else:
            images = center_crop(images, size)
        images = random_rotation(images, self.rotation, fill)
        images = random_crop(images, self.crop_padding, fill)
        if self.hflip:
            images = random_hflip(images)
        images = cutout(images, self.cutout, fill)
        return gaussian_noise(images, self.noise)

    def augmix_views(self, images: torch.Tensor) -> torch.Tensor:
        """(3N, C, H, W): the batch as it is (its flips and crops done: AugMix's reference applies them first),
        then two AugMix views of it (imgrec.data.augmix), for the Jensen-Shannon consistency loss of
        imgrec.tasks.classification."""
        from imgrec.data.augmix import augmix

        pixels = images.clamp(0, 1)
        return torch.cat([images, augmix(pixels), augmix(pixels)])
