"""What every task shares: normalization as the network's first step (batches arrive as [0, 1] pixels), and
checkpoints that say how to rebuild their network and feed it."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from imgrec.data.pixels import Normalization
from imgrec.models.spec import NET_SPEC_KEY
from imgrec.tasks import rng

RNG_KEY = "imgrec_rng"
DATA_FIT_IMAGES = 5000  # airbench fits its whitening layer to 5,000 training images


class Task(L.LightningModule):
    """A LightningModule whose checkpoints carry the network's spec (imgrec.models.spec.NetSpec).

    With it, `imgrec.hub.load_net` rebuilds the trained network from the checkpoint alone (a file, an
    MLflow run, a registered model), and `imgrec.hub.load_model` feeds it [0, 1] pixels. Checkpoints also
    carry the random generators' states, restored when training resumes (`ckpt_path=last`), so that the
    resumed run draws the batch order and augmentation the uninterrupted run would have drawn.
    """

    net_spec: dict[str, Any] | None = None  # set by imgrec.train.build_task: what is known before the data is read
    # What the task learns from (imgrec.validation checks data.labels_per_class against it): "labeled" images (a
    # labeled subset leaves the rest unused), "labeled+unlabeled" (it needs that subset: the rest are its unlabeled
    # images) or "images" (no labels: a labeled subset would only take images away).
    learns_from = "labeled"
    takes_soft_targets = False  # whether its loss takes mixup's and CutMix's soft targets (a classifier's does)

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: dict[str, Any] | None,
        num_classes: int,
        class_names: Sequence[str] | None = None,
    ):
        """What imgrec.train.build_task gives every task: the network, the optimizer and LR schedule
        (conf/optimizer and conf/scheduler, built in configure_optimizers) and the data's classes."""
        super().__init__()
        self.net = net
        self.optimizer, self.scheduler = optimizer, scheduler
        self.num_classes = num_classes
        self.class_names = list(class_names or range(num_classes))
        # The datamodule's training-split statistics: batches arrive as [0, 1] pixels, and normalize() is the
        # network's first step (forward), as it is in front of every trained model (imgrec.hub.PixelModel).
        self.normalization: Normalization | None = None
        self._resumed_rng: dict[str, Any] | None = None

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels -> what the network takes (the pixels themselves before the data is set up)."""
        return pixels if self.normalization is None else self.normalization(pixels)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The network on [0, 1] pixels."""
        return self.net(self.normalize(pixels))

    def check_data(self, datamodule) -> None:
        """Refuse data this task cannot train on (ValueError, one line): imgrec.train calls it on the loaded
        datamodule before any run exists. Progressive resizing needs a network that takes smaller images."""
        progressive = getattr(getattr(datamodule, "augment", None), "progressive", None)
        if progressive is None:
            return
        channels, *sides = datamodule.in_shape
        smallest = [max(4, round(side * progressive.start / 4) * 4) for side in sides]
        try:
            with torch.no_grad():
                self.net.eval()(torch.zeros(2, channels, *smallest))
        except (RuntimeError, ValueError):
            raise ValueError(f"data.augment.progressive: this network cannot take {smallest[0]}x{smallest[1]} images "
                             "(a flatten of a fixed size, or a fixed sequence length): progressive resizing needs "
                             "one that pools over the image (resnet*, wrn, densenet, mobilenetv2, googlenet, vit, "
                             "airbench, lenet5)") from None
        finally:
            self.net.train()

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if getattr(datamodule, "normalization", None) is not None:  # the datamodule's setup() ran first
            self.normalization = datamodule.normalization

    def log_epoch(self, stage: str, metrics: dict[str, Any], prog_bar: Sequence[str] = ()) -> None:
        """Log torchmetrics objects (updated batch by batch) once, from an epoch-end hook: Lightning computes,
        logs and resets them. Logged every batch instead, Lightning's bookkeeping (about 0.5 ms a call) cost
        over 10% of a small net's CPU epoch (`python scripts/bench.py --vs-plain`)."""
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, prog_bar=name in prog_bar)

    def log_file(self, path: Path, folder: str | None = None) -> None:
        """Keep a file (a picture) with the run: through the logger, when it keeps files (MLflow's does)."""
        log_file = getattr(self.logger, "log_file", None)
        if log_file is not None:
            log_file(path, folder)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_rng = checkpoint.get(RNG_KEY)

    def on_fit_start(self) -> None:
        """A net with `fit_to_data(images)` (airbench's whitening layer) sets itself from up to DATA_FIT_IMAGES
        normalized training images before its first step; a resumed run keeps what its checkpoint holds."""
        fit = getattr(self.net, "fit_to_data", None)
        datamodule = getattr(self.trainer, "datamodule", None)
        if fit is None or not hasattr(datamodule, "head") or self.trainer.ckpt_path is not None:
            return
        images, _ = datamodule.head("train", DATA_FIT_IMAGES)
        fit(self.normalize(datamodule.eval_pixels(images.to(self.device))))

    def on_train_start(self) -> None:
        """Resuming: the generators as they were when the checkpoint was written, just before the next epoch
        draws its batch order (everything in between, the sanity check included, drew from them too)."""
        if self._resumed_rng is not None:
            rng.restore(self._resumed_rng)
            self._resumed_rng = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = rng.capture()
        if self.net_spec is None:
            return
        spec = dict(self.net_spec)
        if self.normalization is not None:
            spec["mean"], spec["std"] = self.normalization.stats()
        spec["run_id"] = getattr(self.logger, "run_id", None)
        checkpoint[NET_SPEC_KEY] = spec
