"""Your own images as a datamodule: a folder (data=folder) or a HuggingFace dataset (data=hf), decoded once into the
cache (imgrec.data.cache) at the size the network takes, then read from it as the built-in datasets are read from
memory. Every image is decoded before training starts: a file that does not decode is left out and named (or, with
`bad_files: error`, stops the run in one line), never a crash mid-epoch."""

import logging
from pathlib import Path

import torch

from imgrec.data import folder, hf
from imgrec.data.cache import PARTS, Decoded, Listing, Settings, open_or_build
from imgrec.data.datamodule import ImageDataModule, SourceInfo
from imgrec.data.decode import INTERPOLATIONS, parse_image_size
from imgrec.data.splits import Parts, Split
from imgrec.errors import ConfigError, DataFileError

log = logging.getLogger("imgrec")
BAD_FILES = ("skip", "error")
SHOWN_BAD = 3  # bad files named in the warning line; the run's bad_files.txt has them all


class DecodedImages(ImageDataModule):
    """What a folder and a HuggingFace dataset share: the decode settings, the cache, bad files."""

    def __init__(self, image_size: int | list[int] | None = None, channels: int | None = None,
                 crop_fraction: float = 1.0, interpolation: str = "bilinear", cache_dir: str = "data/cache",
                 bad_files: str = "skip", decode_workers: int | None = None, **kwargs):
        """`image_size`: what the network takes, one int or [h, w] (null: the images' own size, when they share one);
        `channels`: 1 or 3 (null: 1 when every image is grayscale); `crop_fraction`: evaluation centre-crops this share
        of the decoded image (timm's crop_pct); `interpolation`: Pillow's resampling filter; `cache_dir`: where the
        decoded images are kept; `bad_files`: skip (leave out, and name) or error; `decode_workers`: processes that
        decode (null: one per core). The rest: see ImageDataModule."""
        super().__init__(**kwargs)
        if channels not in (None, 1, 3):
            raise ConfigError(f"data.channels must be 1, 3 or null (what the images are), got {channels!r}")
        if not isinstance(crop_fraction, (int, float)) or not 0 < crop_fraction <= 1:
            raise ConfigError(f"data.crop_fraction must be in (0, 1], got {crop_fraction!r}")
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(f"data.interpolation: one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        if bad_files not in BAD_FILES:
            raise ConfigError(f"data.bad_files: skip or error, got {bad_files!r}")
        self.settings = Settings(parse_image_size(image_size), channels, float(crop_fraction), interpolation)
        self.cache_dir, self.bad_files, self.decode_workers = Path(cache_dir), bad_files, decode_workers
        self._decoded: Decoded | None = None

    def listing(self) -> tuple[Listing, str, str]:
        """(the source's listing, what identifies the source, a short name for its cache folder)."""
        raise NotImplementedError

    def decoded(self) -> Decoded:
        if self._decoded is None:
            listing, source, slug = self.listing()
            self._decoded = open_or_build(listing, self.settings, source, self.cache_dir, slug, self.decode_workers)
            self._source = source
        return self._decoded

    def prepare_data(self) -> None:
        self.decoded()  # decodes once, on one process (the others wait for the cache's lock, then open it)

    def read(self) -> Parts:
        decoded = self.decoded()
        if decoded.bad:
            self.say_bad(decoded)
        images = torch.from_numpy(decoded.images)  # memory-mapped: nothing is read until a batch asks
        labels = torch.from_numpy(decoded.labels)
        splits = {}
        for part in PARTS:
            positions = torch.from_numpy(decoded.positions(part))
            if len(positions):
                splits[part] = Split(images, positions, labels[positions])
        if "train" not in splits:
            raise DataFileError(f"data: {self._source} has no readable training images")
        return Parts(splits, decoded.class_names, decoded.preprocess, stratify=True)

    def say_bad(self, decoded: Decoded) -> None:
        shown = "; ".join(f"{name} ({why})" for _, name, why in decoded.bad[:SHOWN_BAD])
        more = f"; and {len(decoded.bad) - SHOWN_BAD} more" if len(decoded.bad) > SHOWN_BAD else ""
        count = f"{len(decoded.bad)} of {len(decoded.labels):,} images"
        if self.bad_files == "error":
            raise DataFileError(f"data.bad_files=error: {count} do not decode: {shown}{more}")
        log.warning("data: %s do not decode and are left out: %s%s (all of them: bad_files.txt in the run's "
                    "artifacts, and %s)", count, shown, more, decoded.folder / "meta.json")

    def source(self) -> SourceInfo:
        decoded = self.decoded()
        return SourceInfo(self.name, self._source, decoded.digest, len(decoded.labels),
                          tuple((name, why) for _, name, why in decoded.bad))


class FolderImages(DecodedImages):
    """data=folder: one sub-folder per class, optional train/ val/ test/ split folders, or a CSV of file,label
    (imgrec.data.folder)."""

    name = "folder"

    def __init__(self, root: str, labels: str | None = None, **kwargs):
        """`root`: the folder; `labels`: a CSV of file,label for a flat folder. The rest: see DecodedImages."""
        super().__init__(**kwargs)
        self.root, self.labels = root, labels

    def listing(self) -> tuple[Listing, str, str]:
        listing = folder.list_folder(self.root, self.labels)
        root = str(Path(self.root).expanduser().resolve())
        self.data_root = root
        source = root if self.labels is None else f"{root} ({Path(self.labels).name})"
        return listing, source, Path(root).name or "folder"


class HFImages(DecodedImages):
    """data=hf: a HuggingFace dataset, a save_to_disk folder, parquet files or a hub name (imgrec.data.hf)."""

    name = "hf"

    def __init__(self, path: str, image_column: str | None = None, label_column: str | None = None,
                 download: bool = True, **kwargs):
        """`path`: the dataset; `image_column`, `label_column`: null finds them by their features; `download`: a hub
        name may be fetched. The rest: see DecodedImages."""
        super().__init__(**kwargs)
        self.path, self.image_column, self.label_column, self.download = path, image_column, label_column, download

    def listing(self) -> tuple[Listing, str, str]:
        splits = hf.load(self.path, self.download)
        local = Path(self.path).expanduser()
        source = str(local.resolve()) if local.exists() else self.path
        self.data_root = source if local.exists() else None
        return hf.list_dataset(splits, self.image_column, self.label_column), source, \
            Path(self.path.rstrip("/")).name or "hf"
