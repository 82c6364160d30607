"""data=stream: training from shards (imgrec.data.shards) on a folder or any fsspec store, as they stream in.

    imgrec shard data=folder data.root=~/photos out=s3://bucket/photos     # once
    imgrec train data=stream data.uri=s3://bucket/photos                   # on every node

Training reads the shards through WebDataset's tar reader: each epoch the training shards are put in an order drawn
from (seed, epoch), dealt out to the DDP ranks and their loader workers (each reads its own share, never another's),
and each stream's samples pass through a shuffle buffer seeded by (seed, epoch, rank, worker). Every stream yields
the same number of batches (an epoch is the training images over ranks x workers x batch size, rounded down, so
that no rank waits on another), so a run resumed with ckpt_path=last at epoch k reads the order the uninterrupted
run read. Validation and test read their shards in order on every rank, each rank keeping every world-size-th
image (as Lightning's DistributedSampler deals them). Remote shards are copied into `cache_dir`, kept below
`cache_limit` (least recently used out first); a failed read is tried again with backoff (`retries`), then fails
the run in one line, resumable. Batches are uint8 images at their stored size: the device-side augmentation, the
normalization (the manifest's statistics) and the crops are those of every other source.
"""

import logging
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from imgrec.data import remote, shards
from imgrec.data.datamodule import ImageDataModule, SourceInfo
from imgrec.data.decode import Preprocess
from imgrec.data.pixels import Normalization
from imgrec.errors import ConfigError

log = logging.getLogger("imgrec")


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardStream(IterableDataset):
    """Batches (uint8 (B, C, H, W), int64 (B,)) of one split's shards for this rank and loader worker."""

    def __init__(self, shard_list: list[tuple[str, int]], batch_size: int, copies: remote.LocalCopies, seed: int,
                 train: bool, shuffle_buffer: int = 0, world: int = 1, workers: int = 1):
        self.shard_list, self.batch_size, self.copies = shard_list, batch_size, copies
        self.seed, self.train, self.shuffle_buffer = seed, train, shuffle_buffer
        self.world, self.workers, self.epoch = world, max(1, workers), 0
        self.num_images = sum(count for _, count in shard_list)  # the split's images (the whole split, every rank)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def streams(self) -> tuple[int, int]:
        """(this stream's number, how many there are): ranks x loader workers."""
        rank, _ = rank_and_world()
        info = get_worker_info()
        return rank * self.workers + (info.id if info is not None else 0), self.world * self.workers

    def __len__(self) -> int:
        """Batches per rank and epoch (what Lightning counts as an epoch's steps): one pass with a last partial
        batch for a single stream; whole batches, as many on every stream, for several."""
        if not self.train:
            return math.ceil(math.ceil(self.num_images / self.world) / self.batch_size)
        if self.world * self.workers == 1:
            return math.ceil(self.num_images / self.batch_size)
        return max(self.workers, self.num_images // (self.world * self.batch_size))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        samples = self.training_samples() if self.train else self.evaluation_samples()
        images, labels = [], []
        for image, label in samples:
            images.append(image)
            labels.append(label)
            if len(labels) == self.batch_size:
                yield torch.from_numpy(np.stack(images)), torch.tensor(labels)
                images, labels = [], []
        if labels:
            yield torch.from_numpy(np.stack(images)), torch.tensor(labels)

    def training_samples(self) -> Iterator[tuple[np.ndarray, int]]:
        stream, streams = self.streams()
        order = random.Random(self.seed * 100_003 + self.epoch).sample(range(len(self.shard_list)), len(self.shard_list))
        mine = [self.shard_list[i][0] for i in order[stream::streams]] or [self.shard_list[order[stream % len(order)]][0]]
        if streams > 1 and self.epoch == 0:
            rank, _ = rank_and_world()
            log.info("data: rank %d, stream %d of %d reads %s", rank, stream, streams,
                     ", ".join(uri.rsplit("/", 1)[-1] for uri in mine))
        worker = stream % self.workers  # this rank's batches dealt out to its workers: equal steps on every rank
        quota = None if streams == 1 else (len(self) // self.workers + (worker < len(self) % self.workers)) * \
            self.batch_size
        rng = random.Random(((self.seed * 100_003 + self.epoch) * 7_919 + stream) * 31)
        buffer: list = []
        yielded = 0

        def source() -> Iterator[tuple[np.ndarray, int]]:
            while True:  # a stream with fewer images than its quota goes round its shards again
                for uri in mine:
                    yield from shards.samples(uri, self.copies)
                if quota is None:
                    return

        for sample in source():
            if quota is not None and yielded >= quota:
                return
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            slot = rng.randrange(len(buffer))  # webdataset's shuffle: a random slot out, the new sample in
            buffer[slot], sample = sample, buffer[slot]
            yielded += 1
            yield sample
        rng.shuffle(buffer)
        for sample in buffer:
            if quota is not None and yielded >= quota:
                return
            yielded += 1
            yield sample

    def evaluation_samples(self) -> Iterator[tuple[np.ndarray, int]]:
        """Every world-size-th image, from this rank's on, in order; the shares padded from the start as Lightning's
        DistributedSampler pads them (so the test predictions gather back in order)."""
        rank, _ = rank_and_world()
        padding = math.ceil(self.num_images / self.world) * self.world - self.num_images
        index, first = 0, []
        for uri, _ in self.shard_list:
            for image, label in shards.samples(uri, self.copies):
                if index < padding:
                    first.append((index, image, label))
                if index % self.world == rank:
                    yield image, label
                index += 1
        for index, image, label in first:  # the padding: images from the start, for the ranks that are short
            if (index + self.num_images) % self.world == rank:
                yield image, label


class EpochLoader(DataLoader):
    """A DataLoader that tells its stream the epoch before each pass (Lightning sets a sampler's epoch, and an
    iterable dataset has none): the order is drawn from (seed, epoch) in every loader worker."""

    def __init__(self, dataset: ShardStream, epoch_of, **kwargs):
        super().__init__(dataset, batch_size=None, **kwargs)
        self.epoch_of = epoch_of

    def __iter__(self):
        self.dataset.set_epoch(self.epoch_of())
        return super().__iter__()


class StreamImages(ImageDataModule):
    name = "stream"

    def __init__(self, uri: str, cache_dir: str = "data/shard_cache", cache_limit: str | int = "20GB",
                 storage_options: dict[str, Any] | None = None, shuffle_buffer: int = 2000, retries: int = 5,
                 **kwargs):
        """`uri`: the shards' folder or store prefix (imgrec shard's `out`); `cache_dir`, `cache_limit`: where remote
        shards are kept and how much of them; `storage_options`: fsspec's keyword arguments (credentials,
        endpoint); `shuffle_buffer`: samples mixed across shards; `retries`: tries again after a failed read. The
        rest: batch sizes, workers, augmentation (see ImageDataModule); the splits are the shards'."""
        for key in ("classes", "train_size", "labels_per_class", "folds"):
            if kwargs.get(key) is not None:
                raise ConfigError(f"data.{key}: data=stream trains on the splits its shards hold; shard the source with "
                                  f"data.{key} instead (imgrec shard data=... data.{key}=...)")
        super().__init__(**kwargs)
        try:
            limit = remote.parse_size(cache_limit)
        except ValueError as err:
            raise ConfigError(f"data.cache_limit: {err}") from None
        self.uri, self.storage_options, self.retries = str(uri), dict(storage_options or {}), retries
        self.shuffle_buffer = shuffle_buffer
        self.copies = remote.LocalCopies(cache_dir, limit, self.storage_options, retries)
        self.data_root = self.uri
        self.manifest: shards.Manifest | None = None

    def load(self) -> None:
        if self.manifest is None:
            self.manifest = shards.read_manifest(self.uri, self.storage_options, self.retries)
            stats = self.manifest.entry["normalization"]
            self._normalization = Normalization(stats["mean"], stats["std"])
            self._preprocess = Preprocess.from_dict(self.manifest.entry["preprocess"])

    def prepare_data(self) -> None:
        self.load()

    @property
    def entry(self) -> dict:
        if self.manifest is None:
            raise RuntimeError("the datamodule is not loaded yet: call load()")
        return self.manifest.entry

    @property
    def preprocess(self) -> Preprocess:
        if self.manifest is None:
            raise RuntimeError("the datamodule is not loaded yet: call load()")
        return self._preprocess

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.entry["class_names"])

    @property
    def normalization(self) -> Normalization | None:
        """The training split's statistics, measured when the shards were written."""
        return None if self.manifest is None else self._normalization

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def loader(self, split: str, batch_size: int, train: bool) -> EpochLoader:
        """Training: `num_workers` loader workers; evaluation reads in order in this process."""
        _, world = rank_and_world()
        workers = self.num_workers if train else 0
        stream = ShardStream(self.manifest.shards(split), batch_size, self.copies, torch.initial_seed(), train,
                             self.shuffle_buffer if train else 0, world, workers)
        epoch_of = (lambda: self.trainer.current_epoch) if self.trainer is not None else (lambda: 0)
        return EpochLoader(stream, epoch_of, num_workers=workers, persistent_workers=False,
                           pin_memory=workers > 0 and torch.cuda.is_available())

    def train_dataloader(self) -> EpochLoader:
        return self.loader("train", self.batch_size, train=True)

    def val_dataloader(self) -> EpochLoader:
        return self.loader("val", self.eval_batch_size, train=False)

    def test_dataloader(self) -> EpochLoader:
        return self.loader("test", self.eval_batch_size, train=False)

    def head(self, split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` images of a split (all when None), uint8, and their labels: read in order."""
        images, labels = [], []
        for uri, _ in self.manifest.shards(split):
            for image, label in shards.samples(uri, self.copies):
                if n is not None and len(labels) >= n:
                    break
                images.append(image)
                labels.append(label)
        return torch.from_numpy(np.stack(images)), torch.tensor(labels)

    def test_pixels(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.head("test", n)
        return self.eval_pixels(images), labels

    def train_sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """The first `n` training images (the shards hold them in an order drawn by the split seed: a random sample)."""
        return self.eval_pixels(self.head("train", n)[0])

    def split_settings(self) -> dict[str, Any]:
        return {"uri": self.uri, "contents": self.entry["contents"]}

    def class_counts(self) -> dict[str, list[int]]:
        return {name: self.entry["splits"][name]["class_counts"] for name in shards.SPLITS}

    def source(self) -> SourceInfo:
        source = self.entry["source"]
        count = sum(len(self.entry["splits"][s]["shards"]) for s in shards.SPLITS)
        return SourceInfo(self.name, self.uri, f"{self.entry['contents']}:{source['digest']}", count)

    @property
    def cache_folder(self) -> Path:
        return self.copies.folder
