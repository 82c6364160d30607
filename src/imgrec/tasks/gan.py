"""Adversarial training of a generator against a discriminator (DCGAN: Radford et al., ICLR 2016,
arXiv:1511.06434), with the non-saturating generator loss of Goodfellow et al. (NeurIPS 2014).

The network is a container with `.generator(z, labels)` and `.discriminator(images, labels)` (e.g.
imgrec.models.dcgan.DCGAN); labels are used when its `conditional` is true. Each batch takes one
discriminator step (real -> 1, fake -> 0, BCE on logits) and one generator step (fake -> 1), each
with its own optimizer: `optimizer` for both, unless `optimizer_g` / `optimizer_d` override it.

Logged per epoch: train/{loss_d, loss_g, d_real, d_fake} (d_*: the discriminator's mean
probability of "real" before its update), {val,test}/{d_real, d_fake}; with `fd_classifier`,
{val,test}/fd_classifier: the Fréchet distance between generated and real images in the feature
space of that classifier (not an FID: see imgrec.tasks.frechet), and for conditional models
{val,test}/cond_acc: how often the classifier assigns a generated image the class it was
generated for. val/* compare `fd_samples` generated images with as many validation images,
test/* with as many test images. At each validation epoch end a grid of samples from fixed
noise (one row per class when conditional) goes to `samples/epoch_XXX.png`.

Under manual optimization Lightning counts every optimizer step: trainer.max_steps=N stops after
N / 2 batches. Schedules (conf/scheduler) are stepped here for both optimizers.
"""

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torchmetrics import MeanMetric

matplotlib.use("Agg")  # headless: render to files only
import matplotlib.pyplot as plt  # noqa: E402

from imgrec.errors import ConfigError, one_line  # noqa: E402
from imgrec.tasks import optim  # noqa: E402
from imgrec.tasks.base import Task  # noqa: E402
from imgrec.tasks.frechet import ClassifierFeatures, feature_stats, frechet_distance  # noqa: E402
from imgrec.tracking.run import log_artifact  # noqa: E402

log = logging.getLogger(__name__)

EVAL_STAGES = ("val", "test")
TRAIN_METRICS = ("loss_d", "loss_g", "d_real", "d_fake")
FIXED_NOISE_SEED = 151106434  # the sample grids' latent vectors: the same every epoch and every run
EVAL_NOISE_SEED = 20160107  # latents for val/test metrics: epochs compare like for like
UNCONDITIONAL_GRID_ROWS = 8


# ----------------------------------------------------------------------------- pictures


def image_grid(images: torch.Tensor, columns: int, padding: int = 2, fill: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) images, N a multiple of `columns`, -> one (C, H', W') image, row by row."""
    n, channels, height, width = images.shape
    rows = n // columns
    padded = F.pad(images, (padding,) * 4, value=fill)
    h, w = height + 2 * padding, width + 2 * padding
    return padded.view(rows, columns, channels, h, w).permute(2, 0, 3, 1, 4).reshape(channels, rows * h, columns * w)


def save_sample_grid(
    images: torch.Tensor, columns: int, path: Path, title: str, row_labels: Sequence[str] | None = None
) -> None:
    """Images in [0, 1] as a grid PNG; `row_labels` names the rows (the classes of a conditional GAN)."""
    grid = image_grid(images.detach().float().cpu().clamp(0, 1), columns).permute(1, 2, 0)
    rows = len(images) // columns
    scale = 2 if grid.shape[0] <= 600 else 1  # small images drawn at 2x, so 28-pixel digits are visible
    fig, ax = plt.subplots(figsize=(grid.shape[1] * scale / 100 + 1.6, grid.shape[0] * scale / 100 + 0.6))
    if grid.shape[-1] == 1:
        ax.imshow(grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        row_height = grid.shape[0] / rows
        ax.set_yticks([(r + 0.5) * row_height for r in range(rows)], [str(n) for n in row_labels], fontsize=7)
    else:
        ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- Inception FID (optional)


def make_inception_fid() -> nn.Module | None:
    """torchmetrics' FID when torch-fidelity and the Inception weights are available, else None (warned)."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=2048, normalize=True, reset_real_features=False)
    except Exception as err:  # missing torch-fidelity, no network for the weights, ...
        log.warning("task.inception_fid: Inception FID unavailable, skipped (%s)", one_line(err))
        return None


def _rgb(images01: torch.Tensor) -> torch.Tensor:
    return images01.expand(-1, 3, -1, -1) if images01.shape[1] == 1 else images01


# ----------------------------------------------------------------------------- the task


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

    def __init__(
        self,
        *args,
        optimizer_g: Callable[..., torch.optim.Optimizer] | None = None,
        optimizer_d: Callable[..., torch.optim.Optimizer] | None = None,
        fd_classifier: str | None = None,
        fd_samples: int = 2000,
        tracking_uri: str | None = None,
        inception_fid: bool = False,
        grid_columns: int = 8,
        **kwargs,
    ):
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
        # The data's per-channel pixel statistics, set from the datamodule in setup(); not saved.
        self.register_buffer("pixel_mean", None, persistent=False)
        self.register_buffer("pixel_std", None, persistent=False)

        for name in TRAIN_METRICS:
            setattr(self, f"train_{name}", MeanMetric())
        for stage in EVAL_STAGES:
            setattr(self, f"{stage}_d_real", MeanMetric())
            setattr(self, f"{stage}_d_fake", MeanMetric())

        self.fd_classifier = fd_classifier
        self.features, self.features_data = self._load_classifier(fd_classifier, tracking_uri, self.net, self.num_classes)
        self._inception: dict[str, nn.Module] = {}  # plain dict: Inception's weights stay out of checkpoints
        if inception_fid:
            first = make_inception_fid()
            if first is not None:
                self._inception = {"val": first, "test": make_inception_fid() or first}
        # Real images are measured once per stage (neither they nor the classifier change): features
        # are gathered during the first epoch, then kept as their mean and covariance.
        self._real_features: dict[str, list[torch.Tensor]] = {}
        self._real_stats: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}
        self._checkpoint: ModelCheckpoint | None = None
        self._last_fd: float | None = None  # for the sample grid's title

    # -- setup

    @staticmethod
    def _load_classifier(
        uri: str | None, tracking_uri: str | None, net: nn.Module, num_classes: int
    ) -> tuple[ClassifierFeatures | None, str | None]:
        if uri is None:
            return None, None
        from imgrec.tracking.checkpoints import load_net, resolve_checkpoint  # mlflow: only when used

        classifier, spec = load_net(resolve_checkpoint(str(uri), tracking_uri, key="task.fd_classifier"))
        in_shape = list(getattr(net, "in_shape", spec["in_shape"]))
        if list(spec["in_shape"]) != in_shape or spec["num_classes"] != num_classes:
            raise ValueError(
                f"task.fd_classifier: {uri} was trained on {spec['data']} images {spec['in_shape']} with "
                f"{spec['num_classes']} classes; this GAN makes {in_shape} images of {num_classes} classes"
            )
        with torch.no_grad():
            logits = classifier.eval()(torch.zeros(2, *in_shape))
        if tuple(logits.shape) != (2, num_classes):
            raise ValueError(f"task.fd_classifier: {uri} is not a classifier (its output is {tuple(logits.shape)})")
        return ClassifierFeatures(classifier, "task.fd_classifier"), spec["data"]

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        data_name = getattr(getattr(datamodule, "spec", None), "name", None)
        if self.features is not None and data_name is not None and data_name != self.features_data:
            # Features of a classifier trained on other data (MNIST vs Fashion-MNIST...) measure nothing.
            raise ConfigError(
                f"task.fd_classifier: {self.fd_classifier} was trained on {self.features_data}, "
                f"but this GAN trains on {data_name}"
            )
        self.pixel_mean = datamodule.mean.detach().clone().float().to(self.device)
        self.pixel_std = datamodule.std.detach().clone().float().to(self.device)

    def logged_metrics(self) -> set[str]:
        """Every metric name this task logs (checkpoint and schedule monitors must be one of them)."""
        names = {f"train/{m}" for m in TRAIN_METRICS}
        for stage in EVAL_STAGES:
            names |= {f"{stage}/d_real", f"{stage}/d_fake"}
            if self.features is not None:
                names.add(f"{stage}/fd_classifier")
                if self.conditional:
                    names.add(f"{stage}/cond_acc")
            if self._inception:
                names.add(f"{stage}/fid_inception")
        return names

    def configure_callbacks(self):
        """Fall back to keeping the latest epoch when the checkpoint monitors a metric this run never logs.

        conf/model/dcgan.yaml monitors val/fd_classifier, which exists only with task.fd_classifier;
        a classifier's val/acc never exists here. Lightning would fail at the first validation, so
        the ModelCheckpoint is replaced by one with the same settings that keeps the latest epoch.
        """
        configured = self.trainer.checkpoint_callback
        if self._checkpoint is None:
            if configured is None or configured.monitor is None or configured.monitor in self.logged_metrics():
                return []
            self._checkpoint = ModelCheckpoint(
                dirpath=configured.dirpath,
                filename=configured.filename,
                monitor=None,
                save_top_k=1,
                save_last=configured.save_last,
                auto_insert_metric_name=configured.auto_insert_metric_name,
                save_weights_only=configured.save_weights_only,
                verbose=configured.verbose,
            )
            hint = " (it needs task.fd_classifier)" if configured.monitor.endswith("fd_classifier") else ""
            log.info("Checkpoints: the latest epoch; this run does not log %s%s", configured.monitor, hint)
        return [self._checkpoint]

    # -- pixels

    def to_gan_range(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images (the datamodule's) -> [-1, 1] pixels, the generator's tanh range."""
        pixels = images * self.pixel_std.view(1, -1, 1, 1) + self.pixel_mean.view(1, -1, 1, 1)
        return pixels.clamp(0, 1) * 2 - 1

    def to_classifier_input(self, generated: torch.Tensor) -> torch.Tensor:
        """[-1, 1] generated images -> normalized like the datamodule's (and so the classifier's) inputs."""
        pixels = (generated.float() + 1) / 2
        return (pixels - self.pixel_mean.view(1, -1, 1, 1)) / self.pixel_std.view(1, -1, 1, 1)

    # -- training

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Generated images in [-1, 1]."""
        return self.net.generator(z, labels if self.conditional else None)

    def on_train_start(self) -> None:
        for stage in EVAL_STAGES:  # the sanity check does not count
            getattr(self, f"{stage}_d_real").reset()
            getattr(self, f"{stage}_d_fake").reset()

    def training_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        labels = labels if self.conditional else None  # fakes are generated for the batch's classes
        real = self.to_gan_range(images)
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
        for name, value in values.items():
            metric = getattr(self, f"train_{name}")
            metric.update(value.detach().float())
            self.log(f"train/{name}", metric, on_step=False, on_epoch=True, prog_bar=name.startswith("loss"))

    def on_train_epoch_end(self) -> None:
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
        return [optim.configure(net.parameters(), own or self.optimizer, self.scheduler, length)
                for net, own in networks]

    # -- validation and test

    def _eval_noise(self, n: int, seed: int) -> torch.Tensor:
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return torch.randn(n, self.latent_dim, device=self.device, generator=generator)

    def _eval_step(self, batch, batch_idx: int, stage: str) -> None:
        images, labels = batch
        labels = labels if self.conditional else None
        real = self.to_gan_range(images)
        fake = self.net.generator(self._eval_noise(len(real), EVAL_NOISE_SEED + batch_idx), labels)
        for name, inputs in (("d_real", real), ("d_fake", fake)):
            metric = getattr(self, f"{stage}_{name}")
            metric.update(self.net.discriminator(inputs, labels).sigmoid().float())
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "d_real")
        if self.measures_quality and not self.trainer.sanity_checking and stage not in self._real_stats:
            self._collect_real(images, stage)

    @property
    def measures_quality(self) -> bool:
        return self.features is not None or bool(self._inception)

    def _collect_real(self, images: torch.Tensor, stage: str) -> None:
        """Keep classifier features (and Inception statistics) of the first `fd_samples` real images."""
        collected = self._real_features.setdefault(stage, [])
        missing = self.fd_samples - sum(len(f) for f in collected)
        if missing <= 0:
            return
        images = images[:missing]
        if self.features is not None:
            collected.append(self.features(images)[0])
        else:
            collected.append(images.new_empty(len(images), 0))  # counts the images for Inception FID
        if stage in self._inception:
            pixels = images * self.pixel_std.view(1, -1, 1, 1) + self.pixel_mean.view(1, -1, 1, 1)
            self._inception[stage].to(self.device).update(_rgb(pixels.clamp(0, 1)), real=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self._sample_quality("val")
        if self.trainer.is_global_zero:
            self.log_sample_grid()

    def on_test_epoch_end(self) -> None:
        self._sample_quality("test")

    def generate(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` images in [-1, 1] from seeded noise, in eval-batch chunks, and their labels (classes in turn)."""
        labels = torch.arange(n, device=self.device) % self.num_classes
        chunk = getattr(self.trainer.datamodule, "eval_batch_size", 1000)
        noise = self._eval_noise(n, seed)
        with torch.no_grad():
            parts = [self(noise[i : i + chunk], labels[i : i + chunk]) for i in range(0, n, chunk)]
        return torch.cat(parts), labels

    def _sample_quality(self, stage: str) -> None:
        """{stage}/fd_classifier, cond_acc and fid_inception: generated vs. the gathered real images."""
        if not self.measures_quality:
            return
        if stage not in self._real_stats:
            gathered = self._real_features.pop(stage, [])
            if not gathered:
                return  # no real images seen (e.g. limit_val_batches=0)
            self._real_stats[stage] = feature_stats(torch.cat(gathered)) if self.features is not None else None
        fake, labels = self.generate(self.fd_samples, EVAL_NOISE_SEED - 1)
        if self.features is not None:
            chunk = getattr(self.trainer.datamodule, "eval_batch_size", 1000)
            outputs = [self.features(self.to_classifier_input(fake[i : i + chunk])) for i in range(0, len(fake), chunk)]
            features, logits = torch.cat([f for f, _ in outputs]), torch.cat([lg for _, lg in outputs])
            distance = frechet_distance(*self._real_stats[stage], *feature_stats(features))
            self._last_fd = distance
            self.log(f"{stage}/fd_classifier", distance, sync_dist=True, prog_bar=True)
            if self.conditional:
                accuracy = (logits.argmax(dim=1) == labels).float().mean()
                self.log(f"{stage}/cond_acc", accuracy, sync_dist=True)
        if stage in self._inception:
            fid = self._inception[stage].to(self.device)
            fid.update(_rgb((fake.float() + 1) / 2), real=False)
            self.log(f"{stage}/fid_inception", fid.compute(), sync_dist=True)
            fid.reset()  # the fakes only: reset_real_features=False keeps the real statistics

    def log_sample_grid(self) -> None:
        """Samples from the fixed noise: run dir `samples/epoch_XXX.png` and MLflow `samples/`."""
        with torch.no_grad():
            images = self(self.fixed_noise, self.fixed_labels)
        epoch = self.current_epoch
        path = Path(self.trainer.default_root_dir) / "samples" / f"epoch_{epoch:03d}.png"
        title = f"epoch {epoch}" + (f": val/fd_classifier {self._last_fd:.3g}" if self._last_fd is not None else "")
        rows = [str(n) for n in self.class_names] if self.conditional else None
        save_sample_grid((images.float() + 1) / 2, self.grid_columns, path, title, rows)
        log_artifact(self.trainer.logger, path, "samples")
