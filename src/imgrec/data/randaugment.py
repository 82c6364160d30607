"""RandAugment (Cubuk et al. 2020) on whole batches: FixMatch's strong augmentation (imgrec.tasks.semi_supervised).

Each image gets `n` operations, each drawn at random from OPERATIONS and applied with probability 1/2 at a random
strength up to `magnitude` (out of 10), as FixMatch's RandAugment draws them (per image, "RandAugmentMC" of its
reference PyTorch implementation). kornia's RandAugment draws one set of operations for the whole batch, hence this
module: each operation runs once per batch on the images that drew it, so a batch costs a few tensor passes and no
per-image Python.

Images are [0, 1] pixels (N, C, H, W), 1 or 3 channels (colour is a no-op on grayscale); they stay in [0, 1].
Strengths follow the RandAugment papers: enhancement factors 1 ± 0.9, rotation ± 30°, shear ± 0.3, translation
± 30% of the side, solarize threshold down to 0, posterize down to 4 bits, each scaled by strength / 10.
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from imgrec.data.warp import warp

# (RGB -> luminance) weights of ITU-R 601-2, as PIL's convert("L")
LUMA = (0.299, 0.587, 0.114)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(M, 1, H, W) luminance of (M, C, H, W) images."""
    if x.shape[1] == 1:
        return x
    return (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: degenerate + factor * (x - degenerate); factor 1 leaves x, 0 gives the degenerate."""
    return (degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)).clamp(0, 1)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalization of each image and channel on 256 levels."""
    m, c = x.shape[:2]
    levels = (x * 255).round().long().flatten(2)
    hist = torch.zeros(m, c, 256, device=x.device).scatter_add_(2, levels, torch.ones_like(levels, dtype=torch.float))
    cdf = hist.cumsum(2)
    lowest = cdf.masked_fill(cdf == 0, math.inf).amin(2, keepdim=True)  # the cdf at the darkest level present
    span = (cdf[..., -1:] - lowest).clamp_min(1)
    lut = ((cdf - lowest) / span).clamp(0, 1)
    flat = (cdf[..., -1:] == lowest).expand_as(lut)  # one level only: nothing to spread
    return torch.where(flat.gather(2, levels), x.flatten(2), lut.gather(2, levels)).view_as(x)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each image and channel to [0, 1]."""
    low, high = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    return torch.where(high > low, (x - low) / (high - low).clamp_min(1e-6), x)


def smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (the degenerate image of its Sharpness enhancement), borders replicated."""
    kernel = x.new_tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]]).div(13).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` (per image) of each 8-bit pixel value."""
    step = (2.0 ** (8 - bits)).view(-1, 1, 1, 1)
    return torch.floor(x * 255 / step) * step / 255


def affine(x: torch.Tensor, matrix: list[list[torch.Tensor]]) -> torch.Tensor:
    """x through per-image affine maps given as rows [[a, b, tx], [c, d, ty]] of (M,) tensors (output -> input)."""
    return warp(x, torch.stack([torch.stack(row, 1) for row in matrix], 1))


def geometric(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def apply(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        one, zero = torch.ones_like(s), torch.zeros_like(s)
        if kind == "rotate":
            angle = s * math.radians(30)
            cos, sin = angle.cos(), angle.sin()
            return affine(x, [[cos, sin, zero], [-sin, cos, zero]])
        amount = 0.3 * s
        return affine(x, {"shear_x": [[one, amount, zero], [zero, one, zero]],
                          "shear_y": [[one, zero, zero], [amount, one, zero]],
                          "translate_x": [[one, zero, -2 * amount], [zero, one, zero]],  # [-1, 1] spans the side
                          "translate_y": [[one, zero, zero], [zero, one, -2 * amount]]}[kind])

    return apply


# name -> f(images, signed strength in [-1, 1] per image): FixMatch's RandAugment pool
OPERATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "identity": lambda x, s: x,  # RandAugment's pool has it: a draw that changes nothing
    "autocontrast": lambda x, s: autocontrast(x),
    "equalize": lambda x, s: equalize(x),
    "brightness": lambda x, s: blend(torch.zeros_like(x), x, 1 + 0.9 * s),
    "color": lambda x, s: blend(grayscale(x).expand_as(x), x, 1 + 0.9 * s),
    "contrast": lambda x, s: blend(grayscale(x).mean((1, 2, 3), keepdim=True).expand_as(x), x, 1 + 0.9 * s),
    "sharpness": lambda x, s: blend(smooth(x), x, 1 + 0.9 * s),
    "posterize": lambda x, s: posterize(x, 8 - (4 * s.abs()).round()),  # down to 4 bits
    "solarize": lambda x, s: torch.where(x >= 1 - s.abs().view(-1, 1, 1, 1), 1 - x, x),
    **{kind: geometric(kind) for kind in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")},
}


def per_image(images: torch.Tensor, operations: dict[str, Callable], drawn: torch.Tensor,
              strength: torch.Tensor) -> torch.Tensor:
    """Each image through the operation it drew (`drawn`: indices into `operations`, or -1 for none) at its signed
    strength: every operation runs once, on the images that drew it."""
    out, names = images.clone(), list(operations)
    for index in drawn.unique().tolist():
        if index >= 0:
            picked = (drawn == index).nonzero().flatten()
            out[picked] = operations[names[index]](images[picked], strength[picked]).clamp(0, 1)
    return out


def random_signs(count: int, device) -> torch.Tensor:
    return (torch.randint(0, 2, (count,), device=device) * 2 - 1).float()


def rand_augment(images: torch.Tensor, n: int = 2, magnitude: float = 10) -> torch.Tensor:
    """`n` random operations per image, each applied with probability 1/2 at a strength drawn uniformly from
    (0, magnitude / 10] with a random sign; draws from torch's generator (seed_everything seeds it)."""
    count, device = images.shape[0], images.device
    for _ in range(n):
        drawn = torch.randint(len(OPERATIONS), (count,), device=device)
        drawn = torch.where(torch.rand(count, device=device) < 0.5, drawn, -1)
        strength = torch.rand(count, device=device) * (magnitude / 10) * random_signs(count, device)
        images = per_image(images, OPERATIONS, drawn, strength)
    return images


def trivial_augment(images: torch.Tensor) -> torch.Tensor:
    """TrivialAugment (Müller & Hutter 2021): one operation per image, drawn uniformly from the pool, at a strength
    drawn uniformly from its whole range (RandAugment's ranges above, not the paper's "wide" ones)."""
    count, device = images.shape[0], images.device
    drawn = torch.randint(len(OPERATIONS), (count,), device=device)
    strength = torch.rand(count, device=device) * random_signs(count, device)
    return per_image(images, OPERATIONS, drawn, strength)
