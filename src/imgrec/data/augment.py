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

from imgrec.data.augmix import augmix
from imgrec.data.decode import center_crop
from imgrec.data.randaugment import rand_augment, trivial_augment
from imgrec.data.warp import warp


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


def random_erasing(images: torch.Tensor, p: float, fill: torch.Tensor | float = 0.0, scale=(0.02, 0.33),
                   ratio=(0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020, torchvision's defaults): with probability `p` per image, a rectangle of
    a share of the area drawn from `scale` and an aspect ratio drawn log-uniformly from `ratio` (cut to the frame)
    is filled with `fill` (the mean pixel: zero once normalized, as torchvision's value=0 after Normalize)."""
    if p <= 0:
        return images
    n, _, h, w = images.shape
    device = images.device
    area = h * w * torch.empty(n, device=device).uniform_(*scale)
    aspect = torch.empty(n, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1])).exp()
    eh = (area * aspect).sqrt().round().clamp(1, h)
    ew = (area / aspect).sqrt().round().clamp(1, w)
    top = (torch.rand(n, device=device) * (h - eh + 1)).floor().view(n, 1, 1)
    left = (torch.rand(n, device=device) * (w - ew + 1)).floor().view(n, 1, 1)
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + eh.view(n, 1, 1)) & (xs >= left) & (xs < left + ew.view(n, 1, 1))
    inside &= (torch.rand(n, 1, 1, device=device) < p)
    return torch.where(inside.unsqueeze(1), torch.as_tensor(fill, dtype=images.dtype, device=device), images)


def mix(images: torch.Tensor, labels: torch.Tensor, num_classes: int, mixup: float, cutmix: float,
        switch_prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of the batch with its reverse, as timm's Mixup does it
    in batch mode: one lambda ~ Beta(alpha, alpha) per batch; with both on, CutMix with probability `switch_prob`.
    Returns the images and soft targets (N, num_classes): lambda of each image's label, the rest its partner's
    (CutMix's lambda is the share of the image its box left)."""
    use_cutmix = cutmix > 0 and (mixup <= 0 or float(torch.rand(())) < switch_prob)
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = images.flip(0)
    if use_cutmix:
        h, w = images.shape[-2:]
        cut_h, cut_w = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
        images = images.clone()
        images[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (h * w)
    else:
        images = images * lam + partner * (1 - lam)
    onehot = F.one_hot(labels, num_classes).to(images.dtype)
    return images, onehot * lam + onehot.flip(0) * (1 - lam)


def gaussian_noise(images: torch.Tensor, largest: float) -> torch.Tensor:
    """Gaussian noise of a standard deviation drawn per image from U(0, largest) (so the net also sees nearly clean
    images), not clipped: the simple baseline for robustness to corruptions."""
    if largest <= 0:
        return images
    sigma = torch.rand(images.shape[0], 1, 1, 1, device=images.device) * largest
    return images + torch.randn_like(images) * sigma


@dataclass(frozen=True)
class Progressive:
    """Progressive resizing (Composer's ProgressiveResizing): training images at `start` of their size for the
    first `delay` of the steps, growing linearly to full size, which the last `finetune` of the steps keep; sides
    rounded to multiples of 4. `mode`: resize (the whole image, smaller) or crop (a random crop of that size)."""

    start: float = 0.5
    delay: float = 0.2
    finetune: float = 0.2
    mode: str = "resize"

    def __post_init__(self):
        if not 0 < self.start <= 1 or not 0 <= self.delay or not 0 <= self.finetune or self.delay + self.finetune > 1:
            raise TypeError(f"progressive takes start in (0, 1], delay and finetune shares of the run that add up to at "
                            f"most 1, got start {self.start}, delay {self.delay}, finetune {self.finetune}")
        if self.mode not in ("resize", "crop"):
            raise TypeError(f"progressive.mode is resize or crop, got {self.mode!r}")

    def scale(self, progress: float) -> float:
        if progress <= self.delay:
            return self.start
        growth = 1 - self.delay - self.finetune
        if growth <= 0 or progress >= 1 - self.finetune:
            return 1.0
        return self.start + (1 - self.start) * (progress - self.delay) / growth

    def __call__(self, images: torch.Tensor, progress: float) -> torch.Tensor:
        """The batch at the size of this point of training (`progress`: the share of the run's steps done)."""
        scale = self.scale(progress)
        size = tuple(max(4, round(side * scale / 4) * 4) for side in images.shape[-2:])
        if scale >= 1 or size == tuple(images.shape[-2:]):
            return images
        if self.mode == "crop":
            top = int(torch.randint(images.shape[-2] - size[0] + 1, ()))
            left = int(torch.randint(images.shape[-1] - size[1] + 1, ()))
            return images[..., top : top + size[0], left : left + size[1]]
        return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


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
    randaugment: dict | None = None  # {ops: 2, magnitude: 9} (or [2, 9]): RandAugment, imgrec.data.randaugment
    trivialaugment: bool = False  # TrivialAugment: one operation per image at a uniform strength
    random_erasing: float = 0.0  # the probability of erasing a rectangle of each image
    mixup: float = 0.0  # Beta's alpha; 0: off (the batch's labels become soft targets: imgrec.data.datamodule)
    cutmix: float = 0.0  # Beta's alpha; 0: off
    mix_switch_prob: float = 0.5  # with both: the probability of CutMix for a batch
    mix_off_epoch: int | None = None  # mixing stops from this epoch on (a clean finish: timm's mixup_off_epoch)
    progressive: dict | None = None  # {start: 0.5, delay: 0.2, finetune: 0.2, mode: resize}: progressive resizing

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
        policy = self.randaugment
        if policy is not None:
            if isinstance(policy, Mapping) and set(policy) <= {"ops", "magnitude"}:
                policy = (policy.get("ops", 2), policy.get("magnitude", 9))
            if not (isinstance(policy, (list, tuple)) and len(policy) == 2 and int(policy[0]) >= 1
                    and 0 < float(policy[1]) <= 10):
                raise TypeError(f"randaugment takes {{ops: N, magnitude: M}} (or [N, M]: N >= 1 operations, magnitude "
                                f"in (0, 10]), got {self.randaugment!r}")
            object.__setattr__(self, "randaugment", {"ops": int(policy[0]), "magnitude": float(policy[1])})
        for key in ("random_erasing", "mix_switch_prob"):
            if not 0 <= getattr(self, key) <= 1:
                raise TypeError(f"{key} is a probability in [0, 1], got {getattr(self, key)!r}")
        if self.mixup < 0 or self.cutmix < 0:
            raise TypeError(f"mixup and cutmix take Beta's alpha > 0 (0: off), got {self.mixup}, {self.cutmix}")
        if self.progressive is not None:
            object.__setattr__(self, "progressive", Progressive(**self.progressive))

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
        if self.randaugment is not None:
            images = rand_augment(images.clamp(0, 1), self.randaugment["ops"], self.randaugment["magnitude"])
        if self.trivialaugment:
            images = trivial_augment(images.clamp(0, 1))
        images = cutout(images, self.cutout, fill)
        images = random_erasing(images, self.random_erasing, fill)
        return gaussian_noise(images, self.noise)

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def mixed(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, epoch: int):
        """(images, soft targets) with mixup or CutMix, until mix_off_epoch; (images, labels) otherwise."""
        if not self.mixes or (self.mix_off_epoch is not None and epoch >= self.mix_off_epoch):
            return images, labels
        return mix(images, labels, num_classes, self.mixup, self.cutmix, self.mix_switch_prob)

    def augmix_views(self, images: torch.Tensor) -> torch.Tensor:
        """(3N, C, H, W): the batch as it is (its flips and crops done: AugMix's reference applies them first),
        then two AugMix views of it (imgrec.data.augmix), for the Jensen-Shannon consistency loss of
        imgrec.tasks.classification."""
        pixels = images.clamp(0, 1)
        return torch.cat([images, augmix(pixels), augmix(pixels)])
