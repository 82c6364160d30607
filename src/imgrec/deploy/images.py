"""Image files -> the float [0, 1] (N, C, H, W) batches a model takes, by the model's own preprocessing.

Files: PNG, JPEG, BMP, GIF, TIFF, WebP (read with Pillow) and NPY (H x W, H x W x C or C x H x W; uint8 in
[0, 255] or float in [0, 1]), of any size and mode: each is decoded as the model's training images were
(imgrec.data.decode: EXIF orientation, 16-bit, transparency, CMYK and palettes converted to its channels; resized
to cover its stored size, centre-cropped to the size it takes). A file that cannot be read is one DataFileError
naming it.
"""

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from imgrec.data.decode import IMAGE_SUFFIXES, Preprocess, model_input
from imgrec.errors import DataFileError


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


def read_image(path: Path, preprocess: Preprocess) -> torch.Tensor:
    """One file as the model takes it: float (C, h, w) in [0, 1]; DataFileError naming it otherwise."""
    return model_input(path, preprocess, path)


def batches(paths: Sequence[Path], preprocess: Preprocess, size: int) -> Iterator[tuple[list[Path], torch.Tensor, list[str]]]:
    """(the readable files, their images as one (n, C, h, w) batch, one line per unreadable file), `size` at a time."""
    for start in range(0, len(paths), size):
        good, images, errors = [], [], []
        for path in paths[start : start + size]:
            try:
                images.append(read_image(path, preprocess))
                good.append(path)
            except DataFileError as err:
                errors.append(str(err))
        yield good, (torch.stack(images) if images else torch.empty(0, *preprocess.in_shape)), errors
