"""One image file (or its bytes) -> uint8 pixels at the size a model stores: what the decode cache, `imgrec predict`
and `imgrec serve` share, so that a model sees the same pixels in training and in use.

`Preprocess` is the rule, saved in every checkpoint's spec (timm's pretrained_cfg is the anchor): the network takes
`image_size` (h, w) images of `channels`; an image is resized, keeping its aspect ratio, to cover the stored size
`image_size / crop_fraction` and centre-cropped to it (with Pillow's `interpolation`, antialiased when shrinking);
evaluation then centre-crops `image_size` out of that (timm's crop_pct), training takes random resized crops of it.

Files from the wild: EXIF orientation is applied; 16-bit and floating-point grayscale are scaled (65535 is white),
not clipped; transparency (an alpha channel, a palette's transparent colour) is composited over black; CMYK and
palettes are converted by Pillow; an animation gives its first frame. JPEGs are decoded at a reduced scale (Pillow's
draft mode: the DCT does the shrinking) when the stored size is at most half theirs. A file Pillow refuses
(truncated, empty, text, a decompression bomb above Pillow's MAX_IMAGE_PIXELS, which stays on), a pickled NPY
(allow_pickle stays off) or a path that cannot be opened is one DataFileError naming it.
"""

import io
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from imgrec.errors import ConfigError, DataFileError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".npy"}
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
INTERPOLATIONS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                  "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
                  "box": Image.Resampling.BOX}
Source = Path | bytes  # a file, or a file's bytes (a HuggingFace dataset's image column)


@dataclass(frozen=True)
class Preprocess:
    """How a raw image becomes a network's input; saved in checkpoints (imgrec.models.spec.NetSpec.preprocess)."""

    image_size: tuple[int, int]  # (h, w): what the network takes
    channels: int  # 1 (grayscale) or 3 (RGB)
    crop_fraction: float = 1.0  # evaluation sees the central crop_fraction of the image (timm's crop_pct)
    interpolation: str = "bilinear"  # Pillow's resampling filter

    @property
    def stored_size(self) -> tuple[int, int]:
        """(H, W) an image is decoded to: image_size / crop_fraction, rounded down as timm does."""
        return tuple(max(side, math.floor(side / self.crop_fraction)) for side in self.image_size)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.image_size)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "image_size": list(self.image_size)}

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> "Preprocess":
        return cls(**{**entry, "image_size": tuple(entry["image_size"])})

    @classmethod
    def native(cls, in_shape) -> "Preprocess":
        """The rule of a dataset stored at the network's own size (the built-in datasets, older checkpoints)."""
        return cls(image_size=tuple(in_shape[1:]), channels=int(in_shape[0]))


def parse_image_size(value) -> tuple[int, int] | None:
    """data.image_size as (h, w): one int (square) or [h, w]; None stays None."""
    if value is None:
        return None
    sides = [value] * 2 if isinstance(value, int) else list(value)
    if len(sides) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sides):
        raise ConfigError(f"data.image_size must be a positive int or [height, width], got {value!r}")
    return tuple(sides)


@contextmanager
def _reading(source: Source, name: str | Path):
    """The opened image; a file Pillow refuses is one DataFileError naming it."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            yield opened
    except Image.DecompressionBombError as err:
        raise DataFileError(f"{name}: refused as a decompression bomb ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:  # truncated, empty, text, unopenable
        raise DataFileError(f"{name}: not an image Pillow can read ({type(err).__name__}: {err})") from None


def probe(source: Source, name: str | Path) -> tuple[int, int, bool]:
    """(height, width, grayscale) from the file's header (EXIF orientation applied), without decoding it."""
    if isinstance(source, Path) and source.suffix.lower() == ".npy":
        array = _from_array(source)
        return *array.shape[:2], array.ndim == 2
    with _reading(source, name) as opened:
        width, height = opened.size
        if opened.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
            width, height = height, width
        return height, width, opened.mode in GRAY_MODES


def decode(source: Source, preprocess: Preprocess, name: str | Path = "image") -> np.ndarray:
    """uint8 (C, H, W) pixels at `preprocess.stored_size`: resized to cover it, keeping the aspect ratio, and
    centre-cropped."""
    if isinstance(source, Path) and source.suffix.lower() == ".npy":
        return _fit(Image.fromarray(_from_array(source)), preprocess)
    height, width = preprocess.stored_size
    with _reading(source, name) as opened:
        if opened.format == "JPEG" and opened.mode in ("L", "RGB", "CMYK"):
            cover = max(width / opened.width, height / opened.height)
            if cover <= 0.5:  # draft keeps at least the size asked for: ask for the covering size
                opened.draft(opened.mode, (math.ceil(opened.width * cover), math.ceil(opened.height * cover)))
        opened.seek(0)  # an animation: its first frame
        ImageOps.exif_transpose(opened, in_place=True)
        return _fit(_eight_bit(opened), preprocess)


def _fit(image: Image.Image, preprocess: Preprocess) -> np.ndarray:
    """The image's central region of the stored size's aspect ratio, resized to the stored size in one resampling
    (Pillow's resize of a box: a fifth faster than resizing the whole image and cropping it)."""
    height, width = preprocess.stored_size
    mode = "L" if preprocess.channels == 1 else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    scale = max(width / image.width, height / image.height)  # the resized image covers the stored size
    left, top = (image.width - width / scale) / 2, (image.height - height / scale) / 2
    box = (round(left), round(top), round(image.width - left), round(image.height - top))
    if image.size != (width, height) or box != (0, 0, width, height):
        image = image.resize((width, height), INTERPOLATIONS[preprocess.interpolation], box=box)
    array = np.asarray(image, dtype=np.uint8).reshape(height, width, preprocess.channels)
    return array.transpose(2, 0, 1).copy()


def model_input(source: Source, preprocess: Preprocess, name: str | Path = "image") -> torch.Tensor:
    """A float (C, h, w) tensor in [0, 1]: what the network takes at evaluation (decoded, then centre-cropped)."""
    stored = torch.from_numpy(decode(source, preprocess, name))
    return center_crop(stored.unsqueeze(0), preprocess.image_size)[0].float().div_(255)


def center_crop(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central (h, w) of a batch (N, C, H, W); the batch itself when it is that size."""
    height, width = images.shape[-2:]
    if (height, width) == tuple(size):
        return images
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    return images[..., top : top + size[0], left : left + size[1]]


def _eight_bit(image: Image.Image) -> Image.Image:
    """L, RGB or another 8-bit mode Pillow converts on: 16-bit gray scaled, transparency flattened over black."""
    if image.mode.startswith("I"):  # I;16 (16-bit PNG), I: 65535 is white (Pillow's convert("L") clips at 255)
        array = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(array / 257, 0, 255).round().astype(np.uint8), mode="L")
    if image.mode == "F":  # floating-point TIFF: [0, 1]
        return Image.fromarray((np.clip(np.asarray(image), 0, 1) * 255).round().astype(np.uint8), mode="L")
    if "A" in image.mode or "a" in image.mode or "transparency" in image.info:
        gray = image.mode in ("LA", "La") or (image.mode == "L" and "transparency" in image.info)
        rgba = image.convert("RGBA")
        flat = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        return flat.convert("L" if gray else "RGB")
    image.load()
    return image


def _from_array(path: Path) -> np.ndarray:
    """An NPY file's image as uint8 (H, W) or (H, W, 3)."""
    try:
        array = np.load(path, allow_pickle=False)  # a pickled object: ValueError
    except (ValueError, OSError) as err:
        raise DataFileError(f"{path}: not a NumPy array file ({err})") from None
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # C x H x W -> H x W x C
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise DataFileError(f"{path}: expected H x W, H x W x C or C x H x W with 1 or 3 channels, got {array.shape}")
    if array.dtype != np.uint8:  # floats in [0, 1]
        array = (np.clip(array.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return array
