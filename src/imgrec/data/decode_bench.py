"""How fast the decode cache is made from cold files (`imgrec bench mode=decode`): Fashion-MNIST written out as
60,000 28-pixel PNGs (the built-in dataset's training images, one class folder each), and JPEG photographs at
1024 x 768 (crops of scikit-image's and scikit-learn's sample photos) decoded to 224 pixels (JPEG draft mode). Each
folder is written once into `scratch`, then decoded into a new cache with every core, and timed."""

import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgrec.data import catalog
from imgrec.data.cache import Settings, open_or_build
from imgrec.data.folder import list_folder

PHOTOS = {"skimage.data": ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"),
          "sklearn.datasets.images": ("china.jpg", "flower.jpg")}
PHOTO_SIZE = (1024, 768)  # width, height: a phone photo shrunk once


def write_fashion_pngs(folder: Path, count: int, root: str | None = None) -> None:
    """The first `count` Fashion-MNIST training images as PNG files, DIR/<class>/<index>.png."""
    files = catalog.load_dataset("fashion_mnist", root, download=False)
    names = [name.replace("/", "-") for name in catalog.FASHION_MNIST_CLASSES]
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(files.train_images[index, 0]).save(folder / names[files.train_labels[index]] / f"{index:05d}.png")


def write_photo_jpegs(folder: Path, count: int, seed: int = 0) -> None:
    """`count` JPEG photographs of PHOTO_SIZE: random crops of the sample photos, resized, quality 90."""
    from importlib.resources import files

    rng = np.random.default_rng(seed)
    photos = [Image.open(files(package) / name).convert("RGB") for package, names in PHOTOS.items() for name in names]
    for index in range(count):
        photo = photos[index % len(photos)]
        side = int(rng.integers(min(photo.size) // 2, min(photo.size)))
        left, top = (int(rng.integers(0, extent - side + 1)) for extent in photo.size)
        image = photo.crop((left, top, left + side, top + side)).resize(PHOTO_SIZE, Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        target = folder / f"photo{index % len(photos)}" / f"{index:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(buffer.getvalue())


def cold_decode(folder: Path, settings: Settings, cache: Path, workers: int) -> tuple[int, float]:
    """(images decoded, seconds) for a new cache of `folder`, listing included."""
    start = time.perf_counter()
    decoded = open_or_build(list_folder(folder), settings, str(folder), cache, "bench", workers)
    return len(decoded.labels), time.perf_counter() - start


def measure(scratch: Path, pngs: int = 60_000, jpegs: int = 2_000, root: str | None = None) -> list[dict]:
    """One row per kind of file: files, seconds, img/s, img/s per core."""
    workers = os.cpu_count() or 1
    kinds = [("Fashion-MNIST PNG, 28 px", scratch / "png", write_fashion_pngs, pngs, Settings(None, None, 1.0, "bilinear")),
             (f"JPEG photo {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} -> 224 px", scratch / "jpeg", write_photo_jpegs, jpegs,
              Settings((224, 224), 3, 1.0, "bilinear"))]
    rows = []
    for name, folder, write, count, settings in kinds:
        if not folder.exists():
            write(folder, count, *([root] if write is write_fashion_pngs else []))
        images, seconds = cold_decode(folder, settings, scratch / f"cache-{time.time_ns()}", workers)
        rows.append({"files": name, "images": images, "seconds": seconds, "img_per_s": images / seconds,
                     "img_per_s_per_core": images / seconds / workers, "cores": workers})
    return rows
