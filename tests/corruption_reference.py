"""The reference that made CIFAR-10-C (make_cifar_c.py of github.com/hendrycks/robustness), restated with numpy,
SciPy, scikit-image and Pillow as it computes each corruption, on one HxWxC uint8 image at a time; its OpenCV calls
as their SciPy equivalents (filter2D and GaussianBlur: correlate with 'mirror', OpenCV's reflect-101 borders).
Each returns float pixels in 0-255, as the reference does before its final np.uint8.

The random corruptions take their draws as arguments, so imgrec's own draws can be fed to both. Run as a module for
the table of max |difference| per corruption and severity: python -m tests.corruption_reference
"""

import io

import numpy as np
import scipy.ndimage as ndi
import skimage as sk
from PIL import Image
from skimage.filters import gaussian

FASHION_MNIST = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
COLOUR_PHOTOS = (("skimage", "chelsea.png"), ("skimage", "coffee.png"), ("skimage", "astronaut.png"),
                 ("sklearn", "flower.jpg"))


# -- the images: real ones at 32 px ------------------------------------------------------------------------------


def fashion_mnist_32(n: int = 4) -> np.ndarray:
    """(n, 32, 32, 1) uint8: the first test images of Fashion-MNIST, resized from 28 px with Pillow's bicubic."""
    import gzip

    with gzip.open(FASHION_MNIST) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    return np.stack([np.asarray(Image.fromarray(image).resize((32, 32), Image.Resampling.BICUBIC)) for image in raw])[
        ..., None]


def colour_photos_32() -> np.ndarray:
    """(4, 32, 32, 3) uint8: scikit-image's and scikit-learn's sample photographs, centre squares resized to 32 px."""
    from tests.dataset_files import sample_photo

    images = []
    for kind, name in COLOUR_PHOTOS:
        photo = sample_photo(kind, name).convert("RGB")
        side = min(photo.size)
        left, top = (photo.width - side) // 2, (photo.height - side) // 2
        images.append(np.asarray(photo.crop((left, top, left + side, top + side)).resize((32, 32), Image.Resampling.BOX)))
    return np.stack(images)


# -- the reference's corruptions -------------------------------------------------------------------------------


def as_pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(x[..., 0] if x.shape[2] == 1 else x)


def from_pil(image: Image.Image) -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    return array[..., None] if array.ndim == 2 else array


def hsv_of(x: np.ndarray) -> np.ndarray:
    return sk.color.rgb2hsv(np.repeat(x, 3, 2) if x.shape[2] == 1 else x)


def rgb_back(hsv: np.ndarray, channels: int) -> np.ndarray:
    rgb = sk.color.hsv2rgb(hsv)
    return rgb[..., :1] if channels == 1 else rgb


def brightness(x, severity):
    c = [.05, .1, .15, .2, .3][severity - 1]
    hsv = hsv_of(x / 255.)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + c, 0, 1)
    return np.clip(rgb_back(hsv, x.shape[2]), 0, 1) * 255


def saturate(x, severity):
    c = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    hsv = sk.color.rgb2hsv(x / 255.)
    hsv[:, :, 1] = np.clip(hsv[:, :, 1] * c[0] + c[1], 0, 1)
    return np.clip(sk.color.hsv2rgb(hsv), 0, 1) * 255


def contrast(x, severity):
    c = [.75, .5, .4, .3, 0.15][severity - 1]
    x = x / 255.
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def gaussian_blur(x, severity):
    c = [.4, .6, 0.7, .8, 1][severity - 1]
    return np.clip(gaussian(x / 255., sigma=c, channel_axis=-1), 0, 1) * 255


def opencv_gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(size, sigma) for sigma > 0."""
    weights = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    return weights / weights.sum()


def disk(radius, alias_blur):
    if radius <= 8:
        grid, ksize = np.arange(-8, 8 + 1), 3
    else:
        grid, ksize = np.arange(-radius, radius + 1), 5
    xs, ys = np.meshgrid(grid, grid)
    aliased = np.array((xs**2 + ys**2) <= radius**2, dtype=np.float32)
    aliased /= np.sum(aliased)
    line = opencv_gaussian_kernel(ksize, alias_blur)
    return ndi.correlate(aliased.astype(np.float64), np.outer(line, line), mode="mirror")  # cv2.GaussianBlur


def defocus_blur(x, severity):
    c = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    x = x / 255.
    kernel = disk(radius=c[0], alias_blur=c[1])
    channels = [ndi.correlate(x[:, :, d], kernel, mode="mirror") for d in range(x.shape[2])]  # cv2.filter2D
    return np.clip(np.stack(channels, 2), 0, 1) * 255


def clipped_zoom(img, zoom_factor):
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = ndi.zoom(img[top:top + ch, top:top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top:trim_top + h, trim_top:trim_top + h]


def zoom_blur(x, severity):
    c = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
         np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][severity - 1]
    x = (x / 255.).astype(np.float32)
    out = np.zeros_like(x)
    for zoom_factor in c:
        out += clipped_zoom(x, zoom_factor)
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


def pixelate(x, severity):
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    side = x.shape[0]
    image = as_pil(x).resize((int(side * c), int(side * c)), Image.Resampling.BOX)
    return from_pil(image.resize((side, side), Image.Resampling.BOX))


def jpeg_compression(x, severity):
    c = [80, 65, 58, 50, 40][severity - 1]
    output = io.BytesIO()
    as_pil(x).save(output, "JPEG", quality=c)
    return from_pil(Image.open(output))


def glass_blur(x, severity, draws):
    """`draws[i]`: iteration i's (dy, dx) for every inner pixel, (2, side - 2, side - 2), rows and columns from the
    top-left inner pixel. The reference's loop walks from the bottom right; its swap on HxWxC views copies only."""
    c = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    side = x.shape[0]
    x = np.uint8(gaussian(x / 255., sigma=c[0], channel_axis=-1) * 255)
    for i in range(c[2]):
        for h in range(side - c[1], c[1], -1):
            for w in range(side - c[1], c[1], -1):
                dy, dx = draws[i][:, h - c[1] - 1, w - c[1] - 1]
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return np.clip(gaussian(x / 255., sigma=c[0], channel_axis=-1), 0, 1) * 255


def plasma_fractal(uniforms, mapsize=32, wibbledecay=3):
    """`uniforms(shape)`: draws in [0, 1), taken in the reference's order (np.random.uniform(-w, w) = (2u - 1) w)."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize, wibble = mapsize, 100

    def wibbledmean(array):
        return array / 4 + wibble * (uniforms(array.shape) * 2 - 1) * wibble

    while stepsize >= 2:
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[stepsize // 2:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def fog(x, severity, uniforms):
    c = [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    x = x / 255.
    max_val = x.max()
    x = x + c[0] * plasma_fractal(uniforms, wibbledecay=c[1])[:32, :32][..., np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def elastic_transform(image, severity, jitter, fields):
    """`jitter`: (3, 2) in [-1, 1), the three points' moves over c2; `fields`: (2, H, W) in [-1, 1), dx then dy.
    cv2.warpAffine (bilinear, reflect-101) as scipy's affine_transform with 'mirror'."""
    side = image.shape[0]
    c = [(side * 0, side * 0, side * 0.08), (side * 0.05, side * 0.2, side * 0.07), (side * 0.08, side * 0.06, side * 0.06),
         (side * 0.1, side * 0.04, side * 0.05), (side * 0.1, side * 0.03, side * 0.03)][severity - 1]
    image = np.array(image, dtype=np.float32) / 255.
    shape = image.shape
    center_square = np.float32(shape[:2]) // 2
    square_size = min(shape[:2]) // 3
    pts1 = np.float32([center_square + square_size, [center_square[0] + square_size, center_square[1] - square_size],
                       center_square - square_size])
    pts2 = pts1 + (jitter * c[2]).astype(np.float32)
    forward = np.linalg.solve(np.c_[pts1, np.ones(3)].astype(np.float64), pts2.astype(np.float64)).T  # cv2's M (x, y)
    inverse = np.linalg.inv(forward[:, :2])
    # affine_transform reads output (row, col) at matrix @ (row, col) + offset: the inverse map in (y, x) order
    matrix = inverse[::-1, ::-1]
    offset = -matrix @ forward[::-1, 2]
    image = np.stack([ndi.affine_transform(image[..., d], matrix, offset, order=1, mode="mirror")
                      for d in range(shape[2])], 2)
    dx = (gaussian(fields[0], c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dy = (gaussian(fields[1], c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(ndi.map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1) * 255


def motion_blur(x, severity, angle):
    """ImageMagick's MagickMotionBlurImage through Wand, as the reference calls it (a PNG in, a PNG out)."""
    import ctypes

    from wand.api import library
    from wand.image import Image as WandImage

    library.MagickMotionBlurImage.argtypes = (ctypes.c_void_p, ctypes.c_double, ctypes.c_double, ctypes.c_double)
    c = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    output = io.BytesIO()
    as_pil(x).save(output, format="PNG")
    with WandImage(blob=output.getvalue()) as image:
        library.MagickMotionBlurImage(image.wand, c[0], c[1], angle)
        blurred = Image.open(io.BytesIO(image.make_blob("png")))
        blurred = blurred.convert("L" if x.shape[2] == 1 else "RGB")
    return from_pil(blurred)


DETERMINISTIC = {"brightness": brightness, "contrast": contrast, "gaussian_blur": gaussian_blur,
                 "defocus_blur": defocus_blur, "zoom_blur": zoom_blur, "pixelate": pixelate,
                 "jpeg_compression": jpeg_compression, "saturate": saturate}


# -- imgrec's side, and the table ---------------------------------------------------------------------------------


def imgrec_255(corruption, images: np.ndarray, severity: int, generator=None) -> np.ndarray:
    """imgrec's batched corruption of (N, H, W, C) uint8 images, as float 0-255 (N, H, W, C)."""
    import torch

    batch = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255
    out = corruption(batch, severity, generator or torch.Generator().manual_seed(0)).clamp(0, 1)
    return out.permute(0, 2, 3, 1).numpy() * 255


def reference_255(name: str, images: np.ndarray, severity: int) -> np.ndarray:
    return np.stack([DETERMINISTIC[name](image, severity) for image in images])


def image_sets() -> dict[str, np.ndarray]:
    """The three kinds the tests hold imgrec to: 1-channel, grey as RGB, colour."""
    gray = fashion_mnist_32()
    return {"1-channel": gray, "grey RGB": np.repeat(gray, 3, 3), "colour": colour_photos_32()}


def table(module) -> list[tuple[str, str, list[float]]]:
    """(corruption, images, max |difference| of 255 at severities 1-5) for `module`'s deterministic corruptions."""
    rows = []
    for name in DETERMINISTIC:
        for kind, images in image_sets().items():
            if name == "saturate" and images.shape[3] == 1 or not hasattr(module, name):
                continue
            rows.append((name, kind, [float(np.abs(imgrec_255(getattr(module, name), images, s)
                                                   - reference_255(name, images, s)).max()) for s in range(1, 6)]))
    return rows


if __name__ == "__main__":
    import importlib
    import sys

    module = importlib.import_module(sys.argv[1] if len(sys.argv) > 1 else "imgrec.data.corruptions")
    print(f"max |imgrec - reference| of 255, {module.__name__}")
    print("| corruption | images | 1 | 2 | 3 | 4 | 5 |\n|---|---|---:|---:|---:|---:|---:|")
    for name, kind, deltas in table(module):
        print(f"| {name} | {kind} | " + " | ".join(f"{d:.2g}" for d in deltas) + " |")
