"""Image files -> the float [0, 1] (N, C, H, W) batches a model takes.

Files: PNG, JPEG, BMP (read with Pillow) and NPY (H x W, H x W x C or C x H x W; uint8 in [0, 255] or
float in [0, 1]). Each is converted to the model's channels (grayscale <-> RGB: ITU-R 601 luma, or the gray
value repeated) and resized to its trained size with bilinear interpolation (Pillow's, antialiased when
shrinking), then scaled to [0, 1].
"""

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from imgrec.errors import DataFileError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".npy"}


def find_inputs(inputs: str | Sequence[str]) -> list[Path]:
    """Files named by a path, a folder (its image files, sorted) or a glob; several as a list."""
    found: list[Path] = []
    for pattern in [inputs] if isinstance(inputs, str) else list(inputs):
        path = Path(pattern)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
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
    if path.suffix.lower() == ".npy":
        image = _from_array(path)
    else:
        try:
            with Image.open(path) as opened:
                image = opened.convert("L" if channels == 1 else "RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise DataFileError(f"{path}: not an image Pillow can read ({type(err).__name__})") from None
    if image.mode != ("L" if channels == 1 else "RGB"):
        image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array.reshape(height, width, channels)).permute(2, 0, 1).contiguous()


def _from_array(path: Path) -> Image.Image:
    try:
        array = np.load(path, allow_pickle=False)
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
