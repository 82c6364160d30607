"""A dataset's train / validation / test splits as positions into uint8 images, and the training split's pixel
statistics. Plain torch (no Lightning): the datamodule and the plain-PyTorch benchmark loop share it.

A source reads its `Parts`: the splits it has (the built-in datasets a train and a test split; a folder what its
split folders hold), each a `Split` of images in memory or memory-mapped. `split_dataset` draws the splits it
lacks from the training images by split_seed alone: a source of your own per class (stratified), the built-in
datasets' validation split as it always was (a random draw), so that earlier runs keep their meaning. Splits are
positions, never copies: a dataset larger than memory stays on disk.

With `labels_per_class`, the training split is a labeled subset (N images per class, drawn by split_seed) and
the rest of the training images are its unlabeled pool (semi-supervised learning, imgrec.tasks.semi_supervised).
"""

from dataclasses import dataclass, replace

import torch

from imgrec.data.decode import Preprocess
from imgrec.data.pixels import Normalization
from imgrec.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """Some images of a source: `images` (uint8 (M, C, H, W), in memory or memory-mapped) at `positions`, and their
    labels."""

    images: torch.Tensor
    positions: torch.Tensor  # int64 (N,)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: torch.Tensor) -> "Split":
        return replace(self, positions=self.positions[rows], labels=self.labels[rows])

    def gather(self, n: int | None = None) -> torch.Tensor:
        """The uint8 images (of the first `n`), read in one indexing op."""
        return self.images[self.positions[:n]]


@dataclass(frozen=True)
class Parts:
    """What a source reads: the splits it has ("train", and "val" / "test" where it has them), its classes, and how
    its images were made (their stored size, what the network takes)."""

    splits: dict[str, Split]
    class_names: tuple[str, ...]
    preprocess: Preprocess
    stratify: bool = True  # draw missing splits per class; False: the built-in datasets' draw


@dataclass(frozen=True)
class DataSplits:
    train: Split  # the labeled training images
    val: Split
    test: Split
    normalization: Normalization  # the training split's per-channel statistics (labeled and unlabeled images)
    class_names: tuple[str, ...]
    preprocess: Preprocess
    own: tuple[str, ...] = ("train", "test")  # the splits the source had (the others were drawn)
    # With labels_per_class: the training images left without their labels. Their true labels are kept for
    # diagnostics only (how right a pseudo-label is); no task trains on them.
    unlabeled: Split | None = None

    @property
    def labeled_positions(self) -> torch.Tensor | None:
        """With labels_per_class: the labeled images' positions in the source's training images."""
        return None if self.unlabeled is None else self.train.positions


def channel_stats(split: Split, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a split's uint8 images in [0, 1] units, in chunks to bound memory."""
    total = torch.zeros(split.images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    positions = split.positions.sort().values  # a memory-mapped file read in order
    for start in range(0, len(positions), chunk):
        part = split.images[positions[start : start + chunk]].to(torch.float64).div_(255)
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.pow(2).sum(dim=(0, 2, 3))
    count = max(1, len(positions) * split.images.shape[2] * split.images.shape[3])
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


def select_classes(split: Split, classes: list[int] | None, num_classes: int) -> Split:
    """Keep only `classes`, relabelled 0..k-1 in the order given (all of them when None)."""
    if classes is None:
        return split
    relabel = torch.full((num_classes,), -1, dtype=split.labels.dtype)
    relabel[torch.tensor(classes)] = torch.arange(len(classes), dtype=split.labels.dtype)
    keep = relabel[split.labels] >= 0
    return replace(split, positions=split.positions[keep], labels=relabel[split.labels[keep]])


def check_classes(classes: list[int] | None, num_classes: int) -> list[int] | None:
    if classes is None:
        return None
    classes = list(classes)
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < num_classes for c in classes):
        raise ConfigError(f"data.classes must be distinct class indices in 0..{num_classes - 1}, got {classes}")
    return classes


def holdout(labels: torch.Tensor, size: int | float, seed: int, stratify: bool, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out): `size` (a count, or a fraction) of the images held out, drawn by `seed` alone; with
    `stratify`, each class gives its share (largest remainders: the counts add up), else a random draw."""
    count = round(size * len(labels)) if isinstance(size, float) else size
    if not 0 < count < len(labels):
        held = "validation" if key.endswith("val_size") else "testing"
        raise ConfigError(f"{key}={size} must leave images for both training and {held} (the training set has "
                          f"{len(labels)})")
    generator = torch.Generator().manual_seed(seed)
    if not stratify:
        order = torch.randperm(len(labels), generator=generator)
        return order[count:], order[:count]
    classes, per_class = labels.unique(return_counts=True)
    share = per_class.double() * count / len(labels)
    taken = share.floor().long()
    extra = (share - taken).argsort(descending=True, stable=True)[: count - int(taken.sum())]
    taken[extra] += 1
    held = torch.zeros(len(labels), dtype=torch.bool)
    order = torch.randperm(len(labels), generator=generator)
    for c, k in zip(classes.tolist(), taken.tolist()):
        held[order[labels[order] == c][:k]] = True
    return order[~held[order]], order[held[order]]  # both in random order: a prefix is a random subset


def labeled_subset(labels: torch.Tensor, per_class: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions of `per_class` images of each class, the other positions), both sorted: the labeled images are
    drawn by split_seed alone, so every run seed and every method sees the same ones."""
    counts = torch.bincount(labels)
    smallest = int(counts[counts > 0].min())
    if per_class > smallest:
        raise ConfigError(f"data.labels_per_class={per_class} exceeds the smallest class's {smallest} training images")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    labeled = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():  # the first per_class images of each class in the random order
        labeled[order[labels[order] == c][:per_class]] = True
    return labeled.nonzero().flatten(), (~labeled).nonzero().flatten()


def split_dataset(parts: Parts, val_size: int | float, split_seed: int, classes: list[int] | None = None,
                  train_size: int | None = None, folds: int | None = None, fold: int = 0,
                  labels_per_class: int | None = None, test_size: int | float = 0.1) -> DataSplits:
    """The source's splits, with those it lacks drawn from its training images: the test split (`test_size`), then
    the validation split (`val_size`; or with `folds`, fold `fold` of `folds` stratified folds: k-fold
    cross-validation, imgrec cv). Each depends on split_seed only, so every run (any seed) validates and tests on
    the same images, and `train_size` keeps the same labelled subset. `labels_per_class` keeps that many labeled
    training images of each class and makes the rest the unlabeled pool (the validation set stays labeled, and
    apart). A split that does not fit the data is a ConfigError."""
    num_classes = len(parts.class_names)
    classes = check_classes(classes, num_classes)
    own = {name: select_classes(split, classes, num_classes) for name, split in parts.splits.items()}
    train = own["train"]
    test = own.get("test")
    if test is None:
        kept, held = holdout(train.labels, test_size, split_seed, parts.stratify, "data.test_size")
        train, test = train.take(kept), train.take(held)
    val = own.get("val")
    if val is None and folds is not None:
        train_idx, val_idx = stratified_fold(train.labels, folds, fold, split_seed)
        train, val = train.take(train_idx), train.take(val_idx)
    elif val is None:
        kept, held = holdout(train.labels, val_size, split_seed, parts.stratify, "data.val_size")
        train, val = train.take(kept), train.take(held)
    if train_size is not None:
        if train_size > len(train):
            raise ConfigError(f"data.train_size={train_size} exceeds the {len(train)} training images")
        train = train.take(torch.arange(train_size))
    # Statistics of every training image: unlabeled ones need no label to count
    normalization = Normalization(*channel_stats(train))
    names = parts.class_names if classes is None else tuple(parts.class_names[c] for c in classes)
    splits = DataSplits(train=train, val=val, test=test, normalization=normalization, class_names=names,
                        preprocess=parts.preprocess, own=tuple(parts.splits))
    if labels_per_class is None:
        return splits
    labeled, unlabeled = labeled_subset(train.labels, labels_per_class, split_seed)
    return replace(splits, train=train.take(labeled), unlabeled=train.take(unlabeled))


def stratified_fold(labels: torch.Tensor, folds: int, fold: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, validation indices) of fold `fold` of `folds` stratified folds: each fold keeps the
    class proportions, the folds cover the training set once, and split_seed alone decides them."""
    from sklearn.model_selection import StratifiedKFold

    smallest = int(torch.bincount(labels).masked_fill(torch.bincount(labels) == 0, len(labels)).min())
    if not 2 <= folds <= smallest:
        raise ConfigError(f"data.folds={folds} must be at least 2 and at most the smallest class's {smallest} images")
    if not 0 <= fold < folds:
        raise ConfigError(f"data.fold={fold} must be in 0..{folds - 1}")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=split_seed)
    train_idx, val_idx = list(splitter.split(labels.numpy().reshape(-1, 1), labels.numpy()))[fold]
    return torch.from_numpy(train_idx), torch.from_numpy(val_idx)
