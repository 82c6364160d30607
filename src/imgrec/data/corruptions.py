"""Common corruptions (Hendrycks & Dietterich 2019, "Benchmarking neural network robustness to common corruptions
and perturbations") as batched tensor ops, for any dataset: `corrupt(images, name, severity, generator)`.

Images are float [0, 1] pixels (N, C, H, W), 1 or 3 channels; they stay in [0, 1]. Every random draw comes from the
`generator` given, so a corrupted set is the same for the same seed.

The severity constants are those of the reference implementation that made CIFAR-10-C (make_cifar_c.py of
github.com/hendrycks/robustness), for every dataset: where a constant is a size in pixels (blur radii and sigmas,
the elastic transform's displacements) it is scaled from 32 px to the image's side. Its algorithms are followed with
these differences, none of which moves a severity: motion blur is ImageMagick's kernel (one-sided Gaussian weights
along a random direction) applied here rather than by ImageMagick; JPEG is PIL's encoder, one image at a time; the
elastic transform's affine and displacement are one resampling. `rotate`, `shear`, `translate` and `zoom` (zooming
out) are MNIST-C's (Mu & Gilmer 2019; github.com/google-research/mnist-c), whose five levels are in its code;
translations are scaled from 28 px.
"""

import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from imgrec.data.warp import warp

Corruption = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


# -- helpers -----------------------------------------------------------------------------------------------------


def uniform(generator: torch.Generator, shape, low: float, high: float, device) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * (high - low) + low).to(device)


def scaled(images: torch.Tensor, size_at_32: float) -> float:
    """A size in pixels given for 32-px images, for these images' side."""
    return size_at_32 * images.shape[-1] / 32


def filter2d(images: torch.Tensor, kernel: torch.Tensor, padding_mode: str = "reflect") -> torch.Tensor:
    """Each channel correlated with one (k, k) kernel (odd k), borders padded (`reflect` = OpenCV's reflect-101)."""
    k = kernel.shape[-1]
    channels = images.shape[1]
    padded = F.pad(images, (k // 2,) * 4, mode=padding_mode)
    return F.conv2d(padded, kernel.to(images).expand(channels, 1, k, k), groups=channels)


def gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-(x**2) / (2 * sigma**2))
    return (weights / weights.sum()).float()


def gaussian_blur_of(images: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "replicate") -> torch.Tensor:
    """scipy.ndimage / skimage's Gaussian filter: radius int(truncate * sigma + 0.5), edges repeated ('nearest'), one
    separable pass along the rows and one along the columns."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return images
    line, channels = gaussian_kernel(sigma, radius).to(images), images.shape[1]
    rows = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode=mode), line.view(1, 1, 1, -1).expand(channels, 1, 1, -1),
                    groups=channels)
    return F.conv2d(F.pad(rows, (0, 0, radius, radius), mode=mode), line.view(1, 1, -1, 1).expand(channels, 1, -1, 1),
                    groups=channels)


def affine_about_centre(images: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Each image read through its own 2x2 `matrix` about the centre (output -> input, in pixels; square images) and
    `shift` (N, 2) pixels (x, y) added to the input position; zeros outside."""
    n, side = images.shape[0], images.shape[-1]
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, :, :2] = matrix
    if shift is not None:
        theta[:, :, 2] = 2 * shift / side  # pixels -> affine_grid's [-1, 1]
    return warp(images, theta)


def signs(generator: torch.Generator, n: int, device) -> torch.Tensor:
    return (torch.randint(0, 2, (n,), generator=generator) * 2 - 1).float().to(device)


# -- noise -------------------------------------------------------------------------------------------------------


def gaussian_noise(x, severity, generator):
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return x + torch.randn(x.shape, generator=generator).to(x) * c


def shot_noise(x, severity, generator):
    c = [500, 250, 100, 75, 50][severity - 1]  # photons at full brightness: fewer is noisier
    return torch.poisson(x.cpu().double() * c, generator=generator).to(x) / c


def impulse_noise(x, severity, generator):
    """Salt and pepper: a share c of the values (each channel apart), half of them 0, half 1."""
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    hit = torch.rand(x.shape, generator=generator).to(x.device) < c
    salt = torch.rand(x.shape, generator=generator).to(x.device) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


def speckle_noise(x, severity, generator):
    c = [0.06, 0.1, 0.12, 0.16, 0.2][severity - 1]
    return x + x * torch.randn(x.shape, generator=generator).to(x) * c


# -- blur --------------------------------------------------------------------------------------------------------


def gaussian_blur(x, severity, generator):
    c = [0.4, 0.6, 0.7, 0.8, 1.0][severity - 1]
    return gaussian_blur_of(x, scaled(x, c))


def disk(radius: float, alias_blur: float) -> torch.Tensor:
    """The reference's defocus kernel: a disk of `radius` on a 17 x 17 grid (wider above radius 8), normalized, then
    smoothed by a 3 x 3 Gaussian of sigma `alias_blur` (OpenCV's GaussianBlur, reflect-101 borders)."""
    half = 8 if radius <= 8 else math.ceil(radius)
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    aliased = ((grid.view(-1, 1) ** 2 + grid.view(1, -1) ** 2) <= radius**2).double()
    aliased /= aliased.sum()
    line = gaussian_kernel(alias_blur, 1 if radius <= 8 else 2).double()
    smooth = line.view(-1, 1) * line.view(1, -1)
    return filter2d(aliased.view(1, 1, *aliased.shape), smooth).view(*aliased.shape).float()


def defocus_blur(x, severity, generator):
    radius, alias_blur = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    return filter2d(x, disk(scaled(x, radius), alias_blur))


def glass_blur(x, severity, generator):
    """Blur, round down to 8 bits, then move every pixel away from the border to a neighbour's place (up or left, by
    up to max_delta: the reference's loop reads pixels it has not moved yet, so one gather is the same), `iterations`
    times, and blur again."""
    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    sigma = scaled(x, sigma)
    x = torch.floor(gaussian_blur_of(x, sigma).clamp(0, 1) * 255) / 255
    n, c, h, w = x.shape
    inner = torch.arange(delta + 1, h)  # the reference's range(h - delta, delta, -1)
    for _ in range(iterations):
        dy, dx = (torch.randint(-delta, delta, (2, n, len(inner), len(inner)), generator=generator))
        rows = (inner.view(1, -1, 1) + dy).clamp(0, h - 1)
        cols = (inner.view(1, 1, -1) + dx).clamp(0, w - 1)
        flat = (rows * w + cols).view(n, 1, -1).expand(-1, c, -1).to(x.device)
        moved = x.flatten(2).gather(2, flat).view(n, c, len(inner), len(inner))
        x = x.clone()
        x[:, :, delta + 1:, delta + 1:] = moved
    return gaussian_blur_of(x, sigma)


def motion_blur(x, severity, generator):
    """ImageMagick's MotionBlurImage (what the reference calls): weights exp(-i^2 / 2 sigma^2), i = 0 .. 2 ceil(radius),
    at offsets i (cos a, sin a) rounded to pixels, along a random direction a in (-45, 45) degrees; edges repeated."""
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    radius, sigma = scaled(x, radius), scaled(x, sigma)
    width = 2 * math.ceil(radius) + 1
    steps = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(steps**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).to(x)
    angle = uniform(generator, (x.shape[0],), -45, 45, "cpu").double().deg2rad()
    off_x = torch.ceil(steps.view(1, -1) * angle.cos().view(-1, 1) - 0.5).long()  # (N, width)
    off_y = torch.ceil(steps.view(1, -1) * angle.sin().view(-1, 1) - 0.5).long()
    n, c, h, w = x.shape
    padded = F.pad(x, (width,) * 4, mode="replicate")
    wide = w + 2 * width
    rows, cols = torch.arange(h).view(1, h, 1) + width, torch.arange(w).view(1, 1, w) + width
    out = torch.zeros_like(x)
    for i in range(width):
        index = ((rows + off_y[:, i].view(-1, 1, 1)) * wide + cols + off_x[:, i].view(-1, 1, 1)).view(n, 1, -1)
        out += weights[i] * padded.flatten(2).gather(2, index.expand(-1, c, -1).to(x.device)).view(n, c, h, w)
    return out


def zoom_blur(x, severity, generator):
    """The mean of the image and of it zoomed in about its centre by each factor (bilinear)."""
    end = [1.06, 1.11, 1.16, 1.21, 1.26][severity - 1]
    factors = np.arange(1, end, 0.01)  # as the reference: float steps, so 1.06 and 1.11 are in
    out = x.clone()
    eye = torch.eye(2, device=x.device).expand(x.shape[0], 2, 2)
    for factor in factors:
        out += affine_about_centre(x, eye / float(factor))
    return out / (len(factors) + 1)


# -- weather and digital -----------------------------------------------------------------------------------------


def plasma_fractal(n: int, mapsize: int, wibble_decay: float, generator: torch.Generator) -> torch.Tensor:
    """The reference's diamond-square height maps (N, mapsize, mapsize) in [0, 1]; `mapsize` a power of two."""
    maps = torch.zeros(n, mapsize, mapsize, dtype=torch.float64)
    step, wibble = mapsize, 100.0

    def wibbled_mean(array):
        return array / 4 + wibble * (torch.rand(array.shape, generator=generator, dtype=torch.float64) * 2 - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        maps[:, half::step, half::step] = wibbled_mean(square)
        centres = maps[:, half::step, half::step]
        corners = maps[:, 0::step, 0::step]
        maps[:, 0::step, half::step] = wibbled_mean(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        maps[:, half::step, 0::step] = wibbled_mean(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step //= 2
        wibble /= wibble_decay
    low = maps.amin((1, 2), keepdim=True)
    maps -= low
    return (maps / maps.amax((1, 2), keepdim=True)).float()


def fog(x, severity, generator):
    strength, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    side = max(x.shape[-2:])
    mapsize = 1 << max(5, (side - 1).bit_length())  # 32 for CIFAR (the reference's) and MNIST sizes
    fractal = plasma_fractal(x.shape[0], mapsize, decay, generator)[:, : x.shape[-2], : x.shape[-1]]
    brightest = x.amax((1, 2, 3), keepdim=True)
    return (x + strength * fractal.unsqueeze(1).to(x)) * brightest / (brightest + strength)


def brightness(x, severity, generator):
    """Value (HSV) raised by c: hue and saturation kept, so each pixel's channels are scaled by (V + c) / V."""
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    value = x.amax(1, keepdim=True)
    return torch.where(value > 0, x * (value + c).clamp(max=1) / value.clamp_min(1e-12), torch.full_like(x, c))


def contrast(x, severity, generator):
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    means = x.mean((2, 3), keepdim=True)
    return (x - means) * c + means


def pixelate(x, severity, generator):
    """Box-averaged down to c of the side, then blown up again (PIL's BOX both ways)."""
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(int(h * c), int(w * c)), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


def jpeg_compression(x, severity, generator):
    """PIL's JPEG encoder at quality c, image by image (no batched codec without torchvision)."""
    quality = [80, 65, 58, 50, 40][severity - 1]
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buffer, "JPEG", quality=quality)
        decoded = np.asarray(Image.open(buffer))
        out.append(decoded if decoded.ndim == 3 else decoded[..., None])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x) / 255


def elastic_transform(x, severity, generator):
    """A random affine (three points around the centre moved by up to c2 px) and a displacement field (uniform noise
    smoothed by a Gaussian of sigma c1, times c0 px), in one bilinear resampling with reflected borders."""
    alpha, sigma, jitter = (f * x.shape[-1] for f in [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                                                        (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)][severity - 1])
    n, _, h, w = x.shape
    centre, square = torch.tensor([w // 2, h // 2], dtype=torch.float64), min(h, w) // 3
    source = torch.stack([centre + square, centre + torch.tensor([square, -square]), centre - square])  # (3, 2)
    target = source + (torch.rand(n, 3, 2, generator=generator, dtype=torch.float64) * 2 - 1) * jitter
    # the affine that takes the source points to the target points; the image is read through its inverse
    ones = torch.ones(n, 3, 1, dtype=torch.float64)
    forward = torch.linalg.solve(torch.cat([source.expand(n, 3, 2), ones], 2), target).transpose(1, 2)  # (n, 2, 3)
    inverse = torch.linalg.inv(forward[:, :, :2])
    field = torch.rand(n, 2, h, w, generator=generator, dtype=torch.float64) * 2 - 1
    displacement = alpha * (gaussian_blur_of(field.float(), sigma, truncate=3, mode="reflect") if sigma > 0
                            else field.float()).double()
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    moved = torch.stack([xs + displacement[:, 0], ys + displacement[:, 1]], -1)  # (n, h, w, 2): x, y
    read = torch.einsum("nij,nhwj->nhwi", inverse, moved - forward[:, :, 2].view(n, 1, 1, 2))
    grid = torch.stack([(2 * read[..., 0] + 1) / w - 1, (2 * read[..., 1] + 1) / h - 1], -1)  # pixel centres
    return F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="reflection", align_corners=False)


# -- geometry (MNIST-C's, five levels each) ------------------------------------------------------------------------


def rotate(x, severity, generator):
    c = [0.2, 0.4, 0.6, 0.8, 1.0][severity - 1]  # radians, either way
    angle = c * signs(generator, x.shape[0], x.device)
    cos, sin = angle.cos(), angle.sin()
    return affine_about_centre(x, torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1))


def shear(x, severity, generator):
    c = [0.2, 0.4, 0.6, 0.8, 1.0][severity - 1]  # skimage's shear angle, either way
    angle = c * signs(generator, x.shape[0], x.device)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    return affine_about_centre(x, torch.stack([torch.stack([one, -angle.sin()], 1),
                                               torch.stack([zero, angle.cos()], 1)], 1))


def translate(x, severity, generator):
    c = [1, 2, 3, 4, 5][severity - 1] * x.shape[-1] / 28  # pixels at 28 px, each way either way
    shift = c * torch.stack([signs(generator, x.shape[0], x.device), signs(generator, x.shape[0], x.device)], 1)
    return affine_about_centre(x, torch.eye(2, device=x.device).expand(x.shape[0], 2, 2), shift)


def zoom(x, severity, generator):
    """Zoomed out about the centre to 0.9 ... 0.5 of the size (MNIST-C's `scale`)."""
    c = [1 / 0.9, 1 / 0.8, 1 / 0.7, 1 / 0.6, 1 / 0.5][severity - 1]
    return affine_about_centre(x, torch.eye(2, device=x.device).expand(x.shape[0], 2, 2) * c)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur, "zoom_blur": zoom_blur,
    "gaussian_blur": gaussian_blur,
    "fog": fog, "brightness": brightness, "contrast": contrast, "elastic_transform": elastic_transform,
    "pixelate": pixelate, "jpeg_compression": jpeg_compression,
    "rotate": rotate, "shear": shear, "translate": translate, "zoom": zoom,
}
SEVERITIES = (1, 2, 3, 4, 5)


def generator_for(seed: int, name: str, severity: int) -> torch.Generator:
    """The random draws of one corruption at one severity: the same set whichever other corruptions are measured."""
    return torch.Generator().manual_seed(seed * 1_000 + list(CORRUPTIONS).index(name) * 10 + severity)


def corrupt(images: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """`images` under corruption `name` at `severity` (1-5), pixels kept in [0, 1]."""
    return CORRUPTIONS[name](images, severity, generator).clamp(0, 1)
