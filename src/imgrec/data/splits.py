"""A dataset's train / validation / test splits as uint8 tensors in CPU memory, and the training split's
pixel statistics. Plain torch (no Lightning): the datamodule and the plain-PyTorch benchmark loop share it.

With `labels_per_class`, the training split is a labeled subset (N images per class, drawn by split_seed) and
the rest of the training images are its unlabeled pool (semi-supervised learning, imgrec.tasks.semi_supervised).
"""

from dataclasses import dataclass

import torch

from imgrec.data import catalog
from imgrec.data.pixels import Normalization
from imgrec.errors import ConfigError

Split = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, C, H, W), int64 labels (N,)


@dataclass(frozen=True)
class DataSplits:
    train: Split  # the labeled training images
    val: Split
    test: Split
    normalization: Normalization  # the training split's per-channel statistics (labeled and unlabeled images)
    # With labels_per_class: the training images left without their labels. Their true labels are kept for
    # diagnostics only (how right a pseudo-label is); no task trains on them.
    unlabeled: Split | None = None
    labeled_positions: torch.Tensor | None = None  # with labels_per_class: the labeled images' indices in the files


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images in [0, 1] units, in chunks to bound memory."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].to(torch.float64).div_(255)
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.pow(2).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


def select_classes(images: torch.Tensor, labels: torch.Tensor, classes: list[int] | None, num_classes: int) -> Split:
    """Keep only `classes`, relabelled 0..k-1 in the order given (all of them when None)."""
    if classes is None:
        return images, labels
    relabel = torch.full((num_classes,), -1, dtype=labels.dtype)
    relabel[torch.tensor(classes)] = torch.arange(len(classes), dtype=labels.dtype)
    keep = relabel[labels] >= 0
    return images[keep], relabel[labels[keep]]


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


def split_dataset(name: str, root: str | None, download: bool, val_size: int | float, split_seed: int,
                  classes: list[int] | None = None, train_size: int | None = None, folds: int | None = None,
                  fold: int = 0, labels_per_class: int | None = None) -> DataSplits:
    """Read the dataset and hold `val_size` training images (a count, or a fraction) out for validation; with
    `folds`, hold out fold `fold` of `folds` stratified folds instead (k-fold cross-validation, scripts/cv.py).

    The split depends on split_seed only, so every run (any seed) validates on the same images, and
    `train_size` keeps the same labelled subset. `labels_per_class` keeps that many labeled training images of
    each class and makes the rest the unlabeled pool (the validation set stays labeled, and apart). A split
    that does not fit the data is a ConfigError.
    """
    files = catalog.load_dataset(name, root, download)
    num_classes = catalog.get_spec(name).num_classes
    all_labels = torch.from_numpy(files.train_labels)
    # positions: each kept image's index in the files (what a run logs of its labeled images)
    positions, labels = select_classes(torch.arange(len(all_labels)), all_labels, classes, num_classes)
    images = torch.from_numpy(files.train_images)[positions]
    if folds is not None:
        train_idx, val_idx = stratified_fold(labels, folds, fold, split_seed)
    else:
        val_count = round(val_size * len(labels)) if isinstance(val_size, float) else val_size
        if not 0 < val_count < len(labels):
            raise ConfigError(f"data.val_size={val_size} must leave images for both training and validation "
                              f"(the training set has {len(labels)})")
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
        train_idx, val_idx = order[val_count:], order[:val_count]
    if train_size is not None:
        if train_size > len(train_idx):
            raise ConfigError(f"data.train_size={train_size} exceeds the {len(train_idx)} training images")
        train_idx = train_idx[:train_size]
    # Statistics of every training image: unlabeled ones need no label to count
    normalization = Normalization(*channel_stats(images[train_idx]))
    test = select_classes(torch.from_numpy(files.test_images), torch.from_numpy(files.test_labels), classes, num_classes)
    val = (images[val_idx], labels[val_idx])
    if labels_per_class is None:
        return DataSplits(train=(images[train_idx], labels[train_idx]), val=val, test=test, normalization=normalization)
    labeled, unlabeled = (train_idx[part] for part in labeled_subset(labels[train_idx], labels_per_class, split_seed))
    return DataSplits(train=(images[labeled], labels[labeled]), val=val, test=test, normalization=normalization,
                      unlabeled=(images[unlabeled], labels[unlabeled]), labeled_positions=positions[labeled])


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


def labelled_test_split(data: str, class_names: tuple[str, ...] | None, root: str | None, download: bool = False) -> Split:
    """The test split a model was trained for: dataset `data`, only its classes (relabelled in the model's order,
    as data.classes left them), for checks and evaluations of a trained model (imgrec.models.spec.NetSpec gives both)."""
    spec = catalog.get_spec(data)
    classes = None
    if class_names is not None and tuple(class_names) != tuple(spec.class_names):
        unknown = [n for n in class_names if n not in spec.class_names]
        if unknown:
            raise ConfigError(f"the model's classes {unknown} are not classes of {data}")
        classes = [spec.class_names.index(n) for n in class_names]
    files = catalog.load_dataset(data, root, download)
    return select_classes(torch.from_numpy(files.test_images), torch.from_numpy(files.test_labels), classes,
                          spec.num_classes)


def sample_train_images(data: str, root: str | None, n: int, seed: int = 0):
    """`n` training images of dataset `data` (a fixed random sample: none of them a test image) as float32 [0, 1]
    numpy arrays (N, C, H, W): what an int8 export calibrates on."""
    import numpy as np

    train = catalog.load_dataset(data, root, download=False).train_images
    pick = np.random.default_rng(seed).choice(len(train), size=min(n, len(train)), replace=False)
    return train[np.sort(pick)].astype(np.float32) / 255
