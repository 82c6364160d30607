"""The LightningDataModule of every image source that can be indexed: the built-in datasets (imgrec.data.builtin),
your own folders and HuggingFace datasets (imgrec.data.decoded).

A source reads its images as one uint8 array (in memory for the built-in datasets, on the GPU when training there;
memory-mapped from the decode cache for your own), and the splits are positions into it. A batch is gathered with
one indexing op, then turned into [0, 1] pixels and augmented as a whole on the training device: random resized crops
(or the evaluation's centre crop) to the network's size, then the data's augmentation. Normalization is the
network's first layer (imgrec.tasks.base.Task), so every network takes [0, 1] pixels.

With `labels_per_class` the training images are a labeled subset; an epoch stays as many batches as the whole
training split would give (the labeled images again and again, each pass in a new order), so that runs with any
number of labels train for the same number of steps. A task that learns from the unlabeled rest too says how many
unlabeled images it wants per labeled one (`unlabeled_ratio`, set by imgrec.train): each training batch is then
{"labeled": (pixels, labels), "unlabeled": (pixels, labels)}, the unlabeled images at their stored size and not
augmented (the task makes its own views of them with `train_views`) and their labels there for diagnostics only.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Sampler

from imgrec.data.augment import Augment
from imgrec.data.decode import Preprocess, center_crop
from imgrec.data.pixels import Normalization
from imgrec.data.splits import DataSplits, Parts, Split, split_dataset
from imgrec.data.synthetic import SyntheticSamples
from imgrec.errors import ConfigError


@dataclass(frozen=True)
class SourceInfo:
    """Where a source's images come from: what a run's MLflow dataset input says of them."""

    name: str  # the dataset as conf/data names it
    uri: str  # a folder, a file, or a hub name
    digest: str  # of its files: their bytes (built-in), their names, sizes and times (a folder), a fingerprint (hf)
    files: int  # how many files (or rows) it read
    bad: tuple[tuple[str, str], ...] = ()  # (name, why) of each image left out because it did not decode


class ImageSet(Dataset):
    """A split's images and labels; `__getitems__` gathers a batch in one indexing op."""

    def __init__(self, split: Split):
        self.images, self.positions, self.labels = split.images, split.positions, split.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[self.positions[index]], self.labels[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices, device=self.labels.device)
        return self.images[self.positions[index]], self.labels[index]

    def head(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the uint8 images, the labels) of the first `n` (all when None)."""
        return self.images[self.positions[:n]], self.labels[:n]


class EpochShuffle(Sampler[int]):
    """A new random order every epoch, drawn from (seed, epoch) alone, never from torch's global generator.

    A run resumed at epoch k then gets the order the uninterrupted run had, whatever else drew random
    numbers meanwhile. Lightning calls set_epoch before each training epoch (as for DistributedSampler).
    `length` > size: the epoch passes over the images several times, each pass in a new order; `stream`
    tells apart samplers of one run (labeled and unlabeled images).
    """

    def __init__(self, size: int, seed: int, length: int | None = None, stream: int = 0):
        self.size, self.seed, self.epoch = size, seed, 0
        self.length, self.stream = size if length is None else length, stream

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        # modulo 2^63: without seed_everything, torch's initial seed is a 64-bit number that would overflow
        order = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch + self.stream * 7_919) % 2**63)
        passes = [torch.randperm(self.size, generator=order) for _ in range(math.ceil(self.length / self.size))]
        return iter(torch.cat(passes)[: self.length].tolist())


def _already_batched(batch):
    """collate_fn for `__getitems__` batches (module-level so worker processes can pickle it)."""
    return batch


class ImageDataModule(L.LightningDataModule):
    """What every indexable source shares: splits, batches, augmentation. A source says what it is (`name`), gets
    its files ready on one process (`prepare_data`) and reads them (`read`)."""

    name: str = ""  # the dataset as conf/data names it (fashion_mnist, folder, hf, ...)

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        num_workers: int = 0,
        val_size: int | float = 5000,
        split_seed: int = 0,
        augment: dict[str, Any] | None = None,
        classes: list[int] | None = None,
        train_size: int | None = None,
        synthetic: SyntheticSamples | dict[str, Any] | None = None,
        folds: int | None = None,
        fold: int = 0,
        labels_per_class: int | None = None,
        test_size: int | float = 0.1,
    ):
        """The types and ranges of these arguments are checked by imgrec.validation with the rest of the config.

        `val_size`, `test_size`: a count of training images, or a fraction of them (0 < x < 1), held out for
        validation (and, for a source without a test split, for testing).
        `folds`, `fold`: validate on fold `fold` of `folds` stratified folds instead (k-fold cross-validation).
        `synthetic`: GAN augmentation, built by imgrec.train.build_datamodule from `data.synthetic`
        (a generator's URI); the config's own {generator: null, ...} means none.
        `labels_per_class`: keep this many labeled training images per class (drawn by split_seed); the rest are
        unlabeled images, for a task that learns from them (see the module's docstring).
        """
        super().__init__()
        if isinstance(synthetic, Mapping):
            if synthetic.get("generator"):
                raise ConfigError("data.synthetic.generator is a URI: build the datamodule with imgrec.train.build_datamodule")
            synthetic = None
        if synthetic is not None and classes is not None:
            raise ConfigError("data.synthetic and data.classes cannot be combined (the generator knows all classes)")
        self.synthetic = synthetic
        self.classes = None if classes is None else [int(c) for c in classes]
        self.train_size = train_size
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.val_size, self.test_size, self.split_seed = val_size, test_size, split_seed
        self.folds, self.fold, self.labels_per_class = folds, fold, labels_per_class
        self.unlabeled_ratio = 0  # unlabeled images per labeled one in a training batch: the task's (imgrec.train)
        try:
            self.augment = Augment(**(augment or {}))
        except TypeError as err:
            raise ConfigError(f"data.augment: {err}") from None
        self.train_set = self.val_set = self.test_set = self.unlabeled_set = None
        self._splits: DataSplits | None = None  # set by load(), on the CPU
        self.data_root: str | None = None  # where load() found the files (None: bundled with a library)

    # -- what a source provides --------------------------------------------------------------------------------

    def read(self) -> Parts:
        """The source's images, labels and own splits (in CPU memory, or memory-mapped)."""
        raise NotImplementedError

    def source(self) -> "SourceInfo":
        """Where the images come from, for the run's MLflow dataset input (after load)."""
        raise NotImplementedError

    def split_settings(self) -> dict[str, Any]:
        """What decided the splits (with the files, the run's dataset digest: imgrec.tracking.datasets)."""
        return {"val_size": self.val_size, "split_seed": self.split_seed, "folds": self.folds,
                "fold": self.fold if self.folds else None, "classes": self.classes, "train_size": self.train_size,
                "labels_per_class": self.labels_per_class,
                **({"test_size": self.test_size} if "test" not in self.splits.own else {})}

    def class_counts(self) -> dict[str, list[int]]:
        """Images per class in each split (the run's class_balance.csv)."""
        counts = {}
        for part in ("train", "val", "test", "unlabeled"):
            split = getattr(self.splits, part)
            if split is not None:
                counts[part] = torch.bincount(split.labels.cpu(), minlength=len(self.class_names)).tolist()
        return counts

    # -- what the model needs to know, once the data is loaded -------------------------------------------------

    @property
    def splits(self) -> DataSplits:
        if self._splits is None:
            raise RuntimeError("the datamodule is not loaded yet: call load()")
        return self._splits

    @property
    def preprocess(self) -> Preprocess:
        return self.splits.preprocess

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return self.preprocess.in_shape

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.splits.class_names

    @property
    def normalization(self) -> Normalization | None:
        return None if self._splits is None else self._splits.normalization

    def load(self) -> None:
        """Read the files and split them, in CPU memory, once: a missing or corrupted file, or a split that does
        not fit the data, fails here (imgrec.train calls it before any MLflow run exists)."""
        if self._splits is not None:
            return
        self._splits = split_dataset(self.read(), self.val_size, self.split_seed, self.classes, self.train_size,
                                     self.folds, self.fold, self.labels_per_class, self.test_size)
        if self.synthetic is not None:
            self.synthetic.check(self.in_shape, self.num_classes)

    def setup(self, stage: str | None = None) -> None:
        """The splits, moved to the training device (fit then test: read and moved once; splits of one array share
        its copy)."""
        if self.train_set is not None:
            return
        self.load()
        device, moved = self._data_device(), {}

        def on_device(split: Split) -> Split:
            key = id(split.images)
            if key not in moved:
                moved[key] = split.images.to(device)
            return Split(moved[key], split.positions.to(device), split.labels.to(device))

        splits = self._splits
        self.train_set, self.val_set, self.test_set = (ImageSet(on_device(s)) for s in (splits.train, splits.val,
                                                                                          splits.test))
        if splits.unlabeled is not None and self.unlabeled_ratio:
            self.unlabeled_set = ImageSet(on_device(splits.unlabeled))

    @property
    def unlabeled_images(self) -> int:
        return 0 if self._splits is None or self._splits.unlabeled is None else len(self._splits.unlabeled)

    def _data_device(self) -> torch.device:
        """The accelerator's memory when batches can be gathered there (no worker processes) and the images fit in
        half of what it has free; else CPU memory (a memory-mapped cache stays mapped)."""
        trainer = self.trainer
        if trainer is None or self.num_workers != 0:
            return torch.device("cpu")
        device = trainer.strategy.root_device
        if device.type == "cuda":
            size = sum({id(s.images): s.images.nbytes for s in (self._splits.train, self._splits.val,
                                                                 self._splits.test)}.values())
            if size > torch.cuda.mem_get_info(device)[0] / 2:
                return torch.device("cpu")
        return device

    def _loader(self, dataset: ImageSet, batch_size: int, shuffle: bool, batches: int | None = None,
                stream: int = 0) -> DataLoader:
        """`batches`: this many batches per epoch (the images passed over again as needed), else one pass."""
        # The run's seed (seed_everything set it) orders the batches; the loader's own generator only seeds
        # worker processes, so loading data never draws from the global generator (see EpochShuffle).
        seed = torch.initial_seed()
        length = None if batches is None else batches * batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochShuffle(len(dataset), seed, length, stream) if shuffle else None,
            num_workers=self.num_workers,
            collate_fn=_already_batched,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.num_workers > 0 and torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(seed),
        )

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        if self.labels_per_class is None:
            return self._loader(self.train_set, self.batch_size, shuffle=True)
        batches = math.ceil((len(self.train_set) + self.unlabeled_images) / self.batch_size)  # as with every label
        labeled = self._loader(self.train_set, self.batch_size, shuffle=True, batches=batches)
        if self.unlabeled_set is None:
            return labeled
        unlabeled = self._loader(self.unlabeled_set, self.batch_size * self.unlabeled_ratio, shuffle=True,
                                 batches=batches, stream=1)
        return CombinedLoader({"labeled": labeled, "unlabeled": unlabeled}, mode="min_size")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, shuffle=False)

    # -- pixels ------------------------------------------------------------------------------------------------

    def eval_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images at their stored size -> what the network takes at evaluation: centre-cropped [0, 1] pixels."""
        return center_crop(images, self.preprocess.image_size).float().div_(255)

    def head(self, split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the uint8 images, the labels) of the first `n` images of a split (train, val, test; all when None), on
        the training device once set up."""
        dataset = getattr(self, f"{split}_set")
        if dataset is not None:
            return dataset.head(n)
        part = getattr(self.splits, split)
        return part.gather(n), part.labels[:n]

    def test_pixels(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the test images as the network takes them at evaluation, their labels): the first `n` when given."""
        test = self.splits.test
        return self.eval_pixels(test.gather(n)), test.labels[:n]

    def train_sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """`n` training images (a fixed random sample, none of them a test image) as the network takes them at
        evaluation: what an int8 export calibrates on."""
        train = self.splits.train
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return self.eval_pixels(train.images[train.positions[pick]])

    def train_views(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels at their stored size -> a training view: a random resized crop (or the centre crop) to the
        network's size, then the data's augmentation; fills (padding, cutout, corners) are the data's mean pixel."""
        return self.augment(pixels, self.preprocess.image_size, self.normalization.mean)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, dict):  # labeled and unlabeled images: the task makes its own views of the unlabeled
            images, labels = batch["unlabeled"]
            return {"labeled": self.on_after_batch_transfer(batch["labeled"], dataloader_idx),
                    "unlabeled": (images.float().div_(255), labels)}
        images, labels = batch
        if self.trainer is None or not self.trainer.training:
            return self.eval_pixels(images), labels
        pixels = images.float().div_(255)
        if self.synthetic:  # generated images join the batch before augmentation, as real ones
            fake_images, fake_labels = self.synthetic.sample(len(labels), pixels.device)
            if fake_images.shape[-2:] != pixels.shape[-2:]:  # the network's size; the batch is at its stored size
                fake_images = torch.nn.functional.interpolate(fake_images, size=pixels.shape[-2:], mode="bilinear")
            pixels, labels = torch.cat([pixels, fake_images]), torch.cat([labels, fake_labels])
        pixels = self.train_views(pixels)
        if self.augment.augmix:  # the clean images and two AugMix views: the task's consistency loss uses them
            pixels = self.augment.augmix_views(pixels)
        # mixup / CutMix: soft targets (N, classes) instead of labels, which the classification loss takes
        pixels, labels = self.augment.mixed(pixels, labels, self.num_classes, self.trainer.current_epoch)
        if self.augment.progressive is not None:
            steps = self.trainer.estimated_stepping_batches
            progress = self.trainer.global_step / steps if steps and steps != float("inf") else 1.0
            pixels = self.augment.progressive(pixels, progress)
        return pixels, labels
