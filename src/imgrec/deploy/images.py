"""Image files -> the float [0, 1] (N, C, H, W) batches a model takes.

Files: PNG, JPEG, BMP, GIF, TIFF, WebP (read with Pillow) and NPY (H x W, H x W x C or C x H x W; uint8 in
[0, 255] or float in [0, 1]). Each is converted to the model's channels (grayscale <-> RGB: ITU-R 601 luma, or the
gray value repeated) and resized to its trained size with bilinear interpolation (Pillow's, antialiased when
shrinking), then scaled to [0, 1]. Files from the wild: 16-bit grayscale is scaled (65535 is white), not clipped;
transparency (an alpha channel or a palette's transparent colour) is composited over black, the value 0; an
animation gives its first frame; CMYK is converted by Pillow. A file Pillow refuses (truncated, empty, a
decompression bomb above Pillow's MAX_IMAGE_PIXELS, which stays on), a pickled NPY (allow_pickle stays off) or a
path that cannot be opened (a symlink loop) is one DataFileError naming it.
"""

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from imgrec.errors import DataFileError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".npy"}


def find_inputs(inputs: str | Sequence[str]) -> list[Path]:
    """Files named by a path, a folder (its image files, sorted) or a glob; several as a list."""
    found: list[Path] = []
    for pattern in [inputs] if isinstance(inputs, str) else list(inputs):
        path = Path(pattern)
        if path.is_dir():
            # not p.is_file(): a broken link or a symlink loop named like an image is read, and named as unreadable
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
        elif path.is_file():
            found.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matches:
                raise DataFileError(f"inputs: no such file, folder or match: {pattern}")
            found += matches
    if not found:
        raise DataFileError(f"inputs: no image files in {inputs}")
    return found


def read_image(path: Path, in_shape: Sequence[int]) -> torch.Tensor:
    """One file as a float (C, H, W) tensor in [0, 1] of the model's shape; DataFileError naming it otherwise."""
    channels, height, width = in_shape
    mode = "L" if channels == 1 else "RGB"
    image = _from_array(path) if path.suffix.lower() == ".npy" else _from_file(path)
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array.reshape(height, width, channels)).permute(2, 0, 1).contiguous()


def _from_file(path: Path) -> Image.Image:
    try:
        with Image.open(path) as opened:
            opened.seek(0)  # an animation: its first frame
            return _eight_bit(opened)
    except Image.DecompressionBombError as err:
        raise DataFileError(f"{path}: refused as a decompression bomb ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:  # OSError: truncated, empty, unopenable
        raise DataFileError(f"{path}: not an image Pillow can read ({type(err).__name__}: {err})") from None


def _eight_bit(image: Image.Image) -> Image.Image:
    """L, RGB or another 8-bit mode Pillow converts on: 16-bit gray scaled, transparency flattened over black."""
    if image.mode.startswith("I"):  # I;16 (16-bit PNG), I: 65535 is white (Pillow's convert("L") clips at 255)
        array = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(array / 257, 0, 255).round().astype(np.uint8), mode="L")
    if image.mode == "F":  # floating-point TIFF: [0, 1]
        return Image.fromarray((np.clip(np.asarray(image), 0, 1) * 255).round().astype(np.uint8), mode="L")
    if "A" in image.mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    image.load()
    return image.copy()


def _from_array(path: Path) -> Image.Image:
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
    return Image.fromarray(array)


def batches(paths: Sequence[Path], in_shape: Sequence[int], size: int) -> Iterator[tuple[list[Path], torch.Tensor, list[str]]]:
    """(the readable files, their images as one (n, C, H, W) batch, one line per unreadable file), `size` at a time."""
    for start in range(0, len(paths), size):
        good, images, errors = [], [], []
        for path in paths[start : start + size]:
            try:
                images.append(read_image(path, in_shape))
                good.append(path)
            except DataFileError as err:
                errors.append(str(err))
        yield good, (torch.stack(images) if images else torch.empty(0, *in_shape)), errors
