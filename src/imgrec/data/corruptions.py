"""Common corruptions (Hendrycks & Dietterich 2019, "Benchmarking neural network robustness to common corruptions
and perturbations") as batched tensor ops, for any dataset: `corrupt(images, name, severity, generator)`.

Images are float [0, 1] pixels (N, C, H, W), 1 or 3 channels; they stay in [0, 1]. Every random draw comes from the
`generator` given, so a corrupted set is the same for the same seed.

The severity constants are those of the reference implementation that made CIFAR-10-C (make_cifar_c.py of
github.com/hendrycks/robustness), for every dataset: where a constant is a size in pixels (blur radii and sigmas,
the elastic transform's displacements) it is scaled from 32 px to the image's side. At 32 px each deterministic
corruption is the reference's to one level of 255 (JPEG exactly), glass blur and fog are too given the same draws,
and motion blur is ImageMagick's (tests/test_corruption_reference.py holds them to the reference restated, and to
ImageMagick through Wand). Differences, none of which moves a severity: motion blur is ImageMagick's kernel applied
here rather than by ImageMagick; JPEG is PIL's encoder, one image at a time; the elastic transform's affine and
displacement are one resampling, where the reference interpolates twice. `saturate` (one of the reference's extras)
takes RGB images only: `corruptions_for(channels)` leaves it out for grayscale ones. `rotate`, `shear`, `translate`
and `zoom` (zooming out) are MNIST-C's (Mu & Gilmer 2019; github.com/google-research/mnist-c), whose five levels are
in its code; translations are scaled from 28 px.
"""

import functools
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
    """ImageMagick's MotionBlurImage (what the reference calls), along a random direction in (-45, 45) degrees."""
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    angles = uniform(generator, (x.shape[0],), -45, 45, "cpu")
    return motion_blur_at(x, scaled(x, radius), scaled(x, sigma), angles)


def motion_blur_at(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick 6's MotionBlurImage (effect.c) rebuilt: weights exp(-i^2 / 2 sigma^2), i = 0 .. 2 ceil(radius),
    normalized, at offsets i (cos a, sin a) rounded to pixels (ceil(v - 0.5)), along each image's angle a in
    degrees; edges repeated (its default virtual pixels). tests/test_corruption_reference.py holds it to ImageMagick."""
    width = 2 * math.ceil(radius) + 1
    steps = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(steps**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).to(x)
    angle = angles.double().deg2rad()
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
    """The mean of the image and of it zoomed in by each factor as the reference's clipped_zoom does it, quirk
    included (fidelity to CIFAR-10-C as published): a crop of ceil(side / z) pixels from (side - crop) // 2, zoomed by
    scipy.ndimage.zoom (order 1, corners aligned) to round(crop * z) and trimmed back from its own centre, so the zoom
    is about a point that moves with the factor (at severity 1 on 32 px, the top-left corner), by rounded sizes."""
    factors = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.01),
               np.arange(1, 1.26, 0.01)][severity - 1]  # the reference's float steps: 1.06 and 1.11 come in
    h, w = x.shape[-2:]
    out = x.clone()
    for factor in factors:
        rows, cols = clipped_zoom_matrix(h, float(factor)).to(x), clipped_zoom_matrix(w, float(factor)).to(x)
        out += rows @ x @ cols.T
    return out / (len(factors) + 1)


def clipped_zoom_matrix(side: int, factor: float) -> torch.Tensor:
    """(side, side): the reference's clipped_zoom along one axis as a matrix. scipy.ndimage.zoom(order=1) reads
    output pixel o of a zoom from n to m pixels at n-1 / m-1 times o (the corners aligned), linearly."""
    crop = int(np.ceil(side / factor))
    top = (side - crop) // 2
    zoomed = int(round(crop * factor))
    trim = (zoomed - side) // 2
    position = (torch.arange(side, dtype=torch.float64) + trim) * ((crop - 1) / (zoomed - 1) if zoomed > 1 else 0.0)
    low = position.floor().clamp(0, crop - 1)
    high = (low + 1).clamp(max=crop - 1)
    weight = position - low
    matrix = torch.zeros(side, side, dtype=torch.float64)
    rows = torch.arange(side)
    matrix[rows, (top + low).long()] += 1 - weight
    matrix[rows, (top + high).long()] += weight
    return matrix


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
    """Down to c of the side and back up, with PIL's BOX filter both ways, as the reference: each resize is PIL's own
    weights (box_matrix) applied to the batch as a matrix along each axis."""
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[-2:]
    small_h, small_w = int(h * c), int(w * c)
    down = box_matrix(h, small_h).to(x) @ x @ box_matrix(w, small_w).to(x).T
    return box_matrix(small_h, h).to(x) @ down @ box_matrix(small_w, w).to(x).T


@functools.cache
def box_matrix(size: int, new_size: int) -> torch.Tensor:
    """(new_size, size): PIL's BOX resampling from `size` to `new_size` pixels along one axis, read off PIL itself
    (the identity resized in 32-bit float mode, so nothing is rounded)."""
    identity = Image.fromarray(np.eye(size, dtype=np.float32), mode="F")
    return torch.from_numpy(np.array(identity.resize((new_size, size), Image.Resampling.BOX))).T.contiguous()


def saturate(x, severity, generator):
    """The reference's saturate (one of its extras): HSV saturation s -> clip(s * c0 + c1, 0, 1), hue and value kept;
    a gray pixel (no hue: skimage's 0, red) is tinted red by c1. RGB images only."""
    scale, shift = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    if x.shape[1] != 3:
        raise ValueError("saturate changes colour: it takes RGB images (a grayscale model has no saturation)")
    value, low = x.amax(1, keepdim=True), x.amin(1, keepdim=True)
    saturation = torch.where(value > 0, (value - low) / value.clamp_min(1e-12), torch.zeros_like(value))
    new = (saturation * scale + shift).clamp(0, 1)
    recoloured = value - (value - x) * new / saturation.clamp_min(1e-12)
    red = torch.cat([value, value * (1 - new), value * (1 - new)], 1)  # hue 0 for the gray pixels
    return torch.where(saturation > 0, recoloured, red)


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
    "saturate": saturate,  # last: generator_for keys each corruption's draws by its place here
}
SEVERITIES = (1, 2, 3, 4, 5)
COLOUR_ONLY = ("saturate",)  # left out for grayscale images


def corruptions_for(channels: int) -> list[str]:
    """Every corruption that applies to images of `channels` channels."""
    return [name for name in CORRUPTIONS if channels == 3 or name not in COLOUR_ONLY]


def generator_for(seed: int, name: str, severity: int) -> torch.Generator:
    """The random draws of one corruption at one severity: the same set whichever other corruptions are measured."""
    return torch.Generator().manual_seed(seed * 1_000 + list(CORRUPTIONS).index(name) * 10 + severity)


def corrupt(images: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """`images` under corruption `name` at `severity` (1-5), pixels kept in [0, 1]."""
    return CORRUPTIONS[name](images, severity, generator).clamp(0, 1)
