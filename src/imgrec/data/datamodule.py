"""The LightningDataModule for every in-memory image dataset.

The whole dataset stays one uint8 tensor (on the GPU when training there); a batch is gathered
with one indexing op, then normalized and augmented as a whole on the training device.

With `labels_per_class` the training images are a labeled subset; an epoch stays as many batches as the whole
training split would give (the labeled images again and again, each pass in a new order), so that runs with any
number of labels train for the same number of steps. A task that learns from the unlabeled rest too says how many
unlabeled images it wants per labeled one (`unlabeled_ratio`, set by imgrec.train): each training batch is then
{"labeled": (images, labels), "unlabeled": (images, labels)}, the unlabeled images normalized but not augmented
(the task makes its own views of them) and their labels there for diagnostics only.
"""

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset, Sampler

from imgrec.data import catalog
from imgrec.data.augment import Augment
from imgrec.data.pixels import Normalization
from imgrec.data.splits import DataSplits, split_dataset
from imgrec.data.synthetic import SyntheticSamples
from imgrec.errors import ConfigError


class InMemoryImages(Dataset):
    """uint8 images (N, C, H, W) and int64 labels; `__getitems__` fetches a batch in one indexing op."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices, device=self.images.device)
        return self.images[index], self.labels[index]


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
        order = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + self.stream * 7_919)
        passes = [torch.randperm(self.size, generator=order) for _ in range(math.ceil(self.length / self.size))]
        return iter(torch.cat(passes)[: self.length].tolist())


def _already_batched(batch):
    """collate_fn for `__getitems__` batches (module-level so worker processes can pickle it)."""
    return batch


def _check_classes(classes: list[int] | None, num_classes: int) -> list[int] | None:
    if classes is None:
        return None
    classes = list(classes)
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < num_classes for c in classes):
        raise ConfigError(f"data.classes must be distinct class indices in 0..{num_classes - 1}, got {classes}")
    return classes


class ImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        name: str,
        root: str | None = None,
        download: bool = True,
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
    ):
        """The types and ranges of these arguments are checked by imgrec.validation with the rest of the config.

        `val_size`: a count of training images, or a fraction of them (0 < x < 1), held out for validation.
        `folds`, `fold`: validate on fold `fold` of `folds` stratified folds instead (k-fold cross-validation).
        `synthetic`: GAN augmentation, built by imgrec.train.build_datamodule from `data.synthetic`
        (a generator's URI); the config's own {generator: null, ...} means none.
        `labels_per_class`: keep this many labeled training images per class (drawn by split_seed); the rest are
        unlabeled images, for a task that learns from them (see the module's docstring).
        """
        super().__init__()
        self.spec = catalog.get_spec(name)
        self.classes = _check_classes(classes, self.spec.num_classes)
        self.train_size = train_size
        if isinstance(synthetic, Mapping):
            if synthetic.get("generator"):
                raise ConfigError("data.synthetic.generator is a URI: build the datamodule with imgrec.train.build_datamodule")
            synthetic = None
        self.synthetic = synthetic
        if synthetic is not None:
            if classes is not None:
                raise ConfigError("data.synthetic and data.classes cannot be combined (the generator knows all classes)")
            synthetic.check(self.in_shape, self.num_classes)
        self.root, self.download = root, download
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.val_size, self.split_seed, self.folds, self.fold = val_size, split_seed, folds, fold
        self.labels_per_class = labels_per_class
        self.unlabeled_ratio = 0  # unlabeled images per labeled one in a training batch: the task's (imgrec.train)
        try:
            self.augment = Augment(**(augment or {}))
        except TypeError as err:
            raise ConfigError(f"data.augment: {err}") from None
        self.train_set = self.val_set = self.test_set = self.unlabeled_set = None
        self._splits: DataSplits | None = None  # set by load(), on the CPU
        self.normalization: Normalization | None = None  # the training split's statistics, set by load()
        self.data_root: str | None = None  # the folder load() read the files from (None: bundled with a library)

    # What the model needs to know, available before any file is read.
    @property
    def in_shape(self) -> tuple[int, int, int]:
        return self.spec.in_shape

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        if self.classes is None:
            return self.spec.class_names
        return tuple(self.spec.class_names[c] for c in self.classes)

    def prepare_data(self) -> None:
        catalog.locate(self.spec.name, self.root, self.download)  # downloads once, on one process

    def load(self) -> None:
        """Read the files and split them, in CPU memory, once: a missing or corrupted file, or a split that does
        not fit the data, fails here (imgrec.train calls it before any MLflow run exists)."""
        if self._splits is not None:
            return
        self._splits = split_dataset(self.spec.name, self.root, self.download, self.val_size, self.split_seed,
                                     self.classes, self.train_size, self.folds, self.fold, self.labels_per_class)
        self.normalization = self._splits.normalization
        found = catalog.root_of(self.spec.name, catalog.locate(self.spec.name, self.root, download=False))
        self.data_root = None if found is None else str(found)

    def setup(self, stage: str | None = None) -> None:
        """The splits, moved to the training device (fit then test: read and moved once)."""
        if self.train_set is not None:
            return
        self.load()
        device = self._data_device()
        self.train_set, self.val_set, self.test_set = (
            InMemoryImages(images.to(device), labels.to(device))
            for images, labels in (self._splits.train, self._splits.val, self._splits.test))
        if self._splits.unlabeled is not None and self.unlabeled_ratio:
            self.unlabeled_set = InMemoryImages(*(part.to(device) for part in self._splits.unlabeled))

    @property
    def unlabeled_images(self) -> int:
        return 0 if self._splits is None or self._splits.unlabeled is None else len(self._splits.unlabeled[1])

    def _data_device(self) -> torch.device:
        """The accelerator's memory when batches can be gathered there (no worker processes)."""
        trainer = self.trainer
        if trainer is not None and self.num_workers == 0:
            return trainer.strategy.root_device
        return torch.device("cpu")

    def _loader(self, dataset: InMemoryImages, batch_size: int, shuffle: bool, batches: int | None = None,
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

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] (or float [0, 1]) -> zero mean and unit variance per channel (training-split statistics)."""
        return self.normalization(images)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, dict):  # labeled and unlabeled images: the task augments the unlabeled ones itself
            images, labels = batch["unlabeled"]
            return {"labeled": self.on_after_batch_transfer(batch["labeled"], dataloader_idx),
                    "unlabeled": (self.normalize(images), labels)}
        images, labels = batch
        images = self.normalize(images)
        if self.trainer is not None and self.trainer.training:
            if self.synthetic:
                fake_images, fake_labels = self.synthetic.sample(len(labels), images.device)
                images = torch.cat([images, self.normalize(fake_images)])
                labels = torch.cat([labels, fake_labels])
            images = self.augment(images, self.normalization)
            if self.augment.augmix:  # the clean images and two AugMix views: the task's consistency loss uses them
                images = self.augment.augmix_views(images, self.normalization)
        return images, labels
