"""Adversarial training of a generator against a discriminator (DCGAN: Radford et al., ICLR 2016,
arXiv:1511.06434), with the non-saturating generator loss of Goodfellow et al. (NeurIPS 2014).

The network is a container with `.generator(z, labels)` and `.discriminator(images, labels)` (e.g.
imgrec.models.dcgan.DCGAN); labels are used when its `conditional` is true. Each batch takes one
discriminator step (real -> 1, fake -> 0, BCE on logits) and one generator step (fake -> 1), each
with its own optimizer: `optimizer` for both, unless `optimizer_g` / `optimizer_d` override it.

Logged per epoch: train/{loss_d, loss_g, d_real, d_fake} (d_*: the discriminator's mean
probability of "real" before its update), {val,test}/{d_real, d_fake}; with `fd_classifier` (a
classifier trained by imgrec on the same data, loaded by imgrec.train through imgrec.hub) the sample
quality of imgrec.tasks.sample_quality: {val,test}/fd_classifier and, for conditional models,
{val,test}/cond_acc. val/* compare `fd_samples` generated images with as many validation images, test/*
with as many test images. At each validation epoch end a grid of samples from fixed noise (one row
per class when conditional) goes to `samples/epoch_XXX.png`.

Under manual optimization Lightning counts every optimizer step: trainer.max_steps=N stops after
N / 2 batches. Schedules (conf/scheduler) are stepped here for both optimizers.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from imgrec import pictures
from imgrec.errors import ConfigError, one_line
from imgrec.tasks import optim
from imgrec.tasks.base import Task
from imgrec.tasks.checkpointing import latest_if_unlogged
from imgrec.tasks.sample_quality import SampleQuality

EVAL_STAGES = ("val", "test")
TRAIN_METRICS = ("loss_d", "loss_g", "d_real", "d_fake")
EVAL_METRICS = ("d_real", "d_fake")
FIXED_NOISE_SEED = 151106434  # the sample grids' latent vectors: the same every epoch and every run
EVAL_NOISE_SEED = 20160107  # latents for val/test metrics: epochs compare like for like
UNCONDITIONAL_GRID_ROWS = 8


def _check_positive_int(value: Any, key: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"task.{key} must be a positive integer, got {value!r}")


def _check_optimizer(optimizer: Callable[..., torch.optim.Optimizer] | None, key: str) -> None:
    """Build it once on a dummy parameter: bad values (lr < 0...) fail now, not mid-fit."""
    if optimizer is None:
        return
    if not callable(optimizer):
        raise ValueError(f"task.{key}: expected an optimizer config (_target_, _partial_: true), got {optimizer!r}")
    try:
        optimizer(params=[nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as err:
        raise ValueError(f"task.{key}: {one_line(err)}") from None


class GANTask(Task):
    """Trains `net.generator` against `net.discriminator` with manual optimization (two optimizers)."""

    learns_from = "images"

    def __init__(
        self,
        *args,
        optimizer_g: Callable[..., torch.optim.Optimizer] | None = None,
        optimizer_d: Callable[..., torch.optim.Optimizer] | None = None,
        fd_classifier: nn.Module | None = None,
        fd_samples: int = 2000,
        inception_fid: bool = False,
        grid_columns: int = 8,
        **kwargs,
    ):
        """`fd_classifier`: an imgrec.hub.PixelModel ([0, 1] images -> logits) of this data, or None."""
        super().__init__(*args, **kwargs)  # net, optimizer, scheduler, num_classes, class_names: see Task
        for part in ("generator", "discriminator"):
            if not isinstance(getattr(self.net, part, None), nn.Module):
                raise ValueError(f"task=gan needs a network with .generator and .discriminator (model=dcgan), "
                                 f"got {type(self.net).__name__}")
        _check_positive_int(fd_samples, "fd_samples")
        _check_positive_int(grid_columns, "grid_columns")
        _check_optimizer(optimizer_g, "optimizer_g")
        _check_optimizer(optimizer_d, "optimizer_d")
        self.automatic_optimization = False  # two optimizers, stepped in turn in training_step
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.latent_dim = int(self.net.latent_dim)
        self.conditional = bool(getattr(self.net, "conditional", False))
        self.fd_samples, self.grid_columns = fd_samples, grid_columns
        self.fd_classifier_spec = self._check_classifier(fd_classifier)
        self.quality = SampleQuality(fd_classifier, self.conditional, fd_samples, inception_fid)
        self._last_fd: float | None = None  # for the sample grid's title

        # Fixed latents (and labels) for the sample grids: one row per class when conditional, the
        # same latent down each column, so a column shows one "style" across classes.
        seeded = torch.Generator().manual_seed(FIXED_NOISE_SEED)
        if self.conditional:
            rows = self.num_classes
            noise = torch.randn(grid_columns, self.latent_dim, generator=seeded).repeat(rows, 1)
        else:
            rows = UNCONDITIONAL_GRID_ROWS
            noise = torch.randn(rows * grid_columns, self.latent_dim, generator=seeded)
        # Not saved: the seed recreates them, and a checkpoint stays loadable with another grid_columns.
        self.register_buffer("fixed_noise", noise, persistent=False)
        self.register_buffer("fixed_labels", torch.arange(rows).repeat_interleave(grid_columns), persistent=False)

        for name in TRAIN_METRICS:
            setattr(self, f"train_{name}", MeanMetric())
        for stage in EVAL_STAGES:
            for name in EVAL_METRICS:
                setattr(self, f"{stage}_{name}", MeanMetric())

    # -- setup

    def _check_classifier(self, classifier: nn.Module | None):
        if classifier is None:
            return None
        spec = classifier.spec
        in_shape = list(getattr(self.net, "in_shape", spec.in_shape))
        if list(spec.in_shape) != in_shape or spec.num_classes != self.num_classes:
            raise ValueError(
                f"task.fd_classifier: it was trained on {spec.data} images {list(spec.in_shape)} with "
                f"{spec.num_classes} classes; this GAN makes {in_shape} images of {self.num_classes} classes"
            )
        return spec

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data = getattr(self.trainer.datamodule, "name", None)
        spec = self.fd_classifier_spec
        if spec is not None and data is not None and data != spec.data:
            # Features of a classifier trained on other data (MNIST vs Fashion-MNIST...) measure nothing.
            raise ConfigError(f"task.fd_classifier: it was trained on {spec.data}, but this GAN trains on {data}")

    def logged_metrics(self) -> set[str]:
        """Every metric name this task logs (checkpoint and schedule monitors must be one of them)."""
        names = {f"train/{m}" for m in TRAIN_METRICS} | {f"{s}/{m}" for s in EVAL_STAGES for m in EVAL_METRICS}
        return names | {name for stage in EVAL_STAGES for name in self.quality.names(stage)}

    def configure_callbacks(self):
        """conf/model/dcgan.yaml monitors val/fd_classifier, which exists only with task.fd_classifier."""
        fallback = latest_if_unlogged(self.trainer, self.logged_metrics(), " (it needs task.fd_classifier)")
        return [fallback] if fallback else []

    # -- training

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Generated images in [-1, 1]."""
        return self.net.generator(z, labels if self.conditional else None)

    def on_train_start(self) -> None:
        super().on_train_start()  # resuming: the random generators as the checkpoint left them
        for stage in EVAL_STAGES:  # the sanity check does not count
            for name in EVAL_METRICS:
                getattr(self, f"{stage}_{name}").reset()

    def training_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        labels = labels if self.conditional else None  # fakes are generated for the batch's classes
        real = images.clamp(0, 1) * 2 - 1  # the generator's tanh range
        generator, discriminator = self.net.generator, self.net.discriminator
        opt_g, opt_d = self.optimizers()
        fake = generator(torch.randn(len(real), self.latent_dim, device=self.device), labels)

        # Discriminator step: real -> 1, fake -> 0 (the fakes detached: no generator gradients).
        real_logits = discriminator(real, labels)
        fake_logits = discriminator(fake.detach(), labels)
        loss_d = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + \
            F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        # Generator step, non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z))).
        self.toggle_optimizer(opt_g)  # the discriminator's weights need no gradients here
        g_logits = discriminator(fake, labels)
        loss_g = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self._step_schedulers("step")

        values = {"loss_d": loss_d, "loss_g": loss_g, "d_real": real_logits.sigmoid(), "d_fake": fake_logits.sigmoid()}
        for name in TRAIN_METRICS:  # logged per epoch (on_train_epoch_end)
            getattr(self, f"train_{name}").update(values[name].detach().float())

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train", {name: getattr(self, f"train_{name}") for name in TRAIN_METRICS},
                       prog_bar=("loss_d", "loss_g"))
        self._step_schedulers("epoch")  # after validation, so a plateau schedule sees this epoch's metric

    def _step_schedulers(self, interval: str) -> None:
        """Manual optimization steps no schedule by itself: each optimizer's, at its interval."""
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != interval:
                continue
            if config.monitor is None:
                config.scheduler.step()
            elif config.monitor in self.trainer.callback_metrics:
                config.scheduler.step(self.trainer.callback_metrics[config.monitor])

    def configure_optimizers(self):
        monitor = (self.scheduler or {}).get("monitor")
        if (self.scheduler or {}).get("schedule") is not None and monitor and monitor not in self.logged_metrics():
            raise ConfigError(f"scheduler.monitor: task=gan does not log '{monitor}'; "
                              f"choose one of {', '.join(sorted(self.logged_metrics()))}")
        length = optim.run_length(self.trainer)
        networks = ((self.net.generator, self.optimizer_g), (self.net.discriminator, self.optimizer_d))
        # The order of self.optimizers(): generator, discriminator.
        return [optim.configure(net.named_parameters(), own or self.optimizer, self.scheduler, length)
                for net, own in networks]

    # -- validation and test

    def _eval_noise(self, n: int, seed: int) -> torch.Tensor:
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return torch.randn(n, self.latent_dim, device=self.device, generator=generator)

    def _eval_step(self, batch, batch_idx: int, stage: str) -> None:
        images, labels = batch
        labels = labels if self.conditional else None
        real = images.clamp(0, 1) * 2 - 1
        fake = self.net.generator(self._eval_noise(len(real), EVAL_NOISE_SEED + batch_idx), labels)
        for name, inputs in (("d_real", real), ("d_fake", fake)):  # logged per epoch (_log_eval)
            getattr(self, f"{stage}_{name}").update(self.net.discriminator(inputs, labels).sigmoid().float())
        if not self.trainer.sanity_checking and self.quality.needs_real(stage):
            self.quality.add_real(stage, images)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self._log_eval("val")
        if self.trainer.is_global_zero:
            self.log_sample_grid()

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def _log_eval(self, stage: str) -> None:
        self.log_epoch(stage, {name: getattr(self, f"{stage}_{name}") for name in EVAL_METRICS}, prog_bar=("d_real",))
        self._log_quality(stage)

    def generate(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` images in [-1, 1] from seeded noise, in eval-batch chunks, and their labels (classes in turn)."""
        labels = torch.arange(n, device=self.device) % self.num_classes
        chunk = self._eval_chunk()
        noise = self._eval_noise(n, seed)
        with torch.no_grad():
            parts = [self(noise[i : i + chunk], labels[i : i + chunk]) for i in range(0, n, chunk)]
        return torch.cat(parts), labels

    def _eval_chunk(self) -> int:
        return getattr(self.trainer.datamodule, "eval_batch_size", 1000)

    def _log_quality(self, stage: str) -> None:
        if not self.quality.active:
            return
        fake, labels = self.generate(self.fd_samples, EVAL_NOISE_SEED - 1)
        values = self.quality.measure(stage, (fake.float() + 1) / 2, labels, self._eval_chunk())
        self._last_fd = values.get(f"{stage}/fd_classifier", self._last_fd)
        for name, value in values.items():
            self.log(name, value, sync_dist=True, prog_bar=name.endswith("fd_classifier"))

    def log_sample_grid(self) -> None:
        """Samples from the fixed noise: run dir `samples/epoch_XXX.png` and MLflow `samples/`."""
        with torch.no_grad():
            images = self(self.fixed_noise, self.fixed_labels)
        epoch = self.current_epoch
        path = Path(self.trainer.default_root_dir) / "samples" / f"epoch_{epoch:03d}.png"
        title = f"epoch {epoch}" + (f": val/fd_classifier {self._last_fd:.3g}" if self._last_fd is not None else "")
        rows = [str(n) for n in self.class_names] if self.conditional else None
        pictures.save_grid((images.float() + 1) / 2, self.grid_columns, path, title, rows)
        self.log_file(path, "samples")
