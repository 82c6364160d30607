"""Autoencoding: reconstruct images through a small latent vector, then ask how useful that vector is.

The network (e.g. imgrec.models.autoencoder.ConvAutoencoder) has `encode(x) -> latent` and
`forward(x) -> reconstruction logits`; a sigmoid maps the logits to [0, 1] pixels, and every loss
and metric compares them with the clean batch in [0, 1] pixel space. With `denoise_std > 0` the
encoder sees the batch corrupted by Gaussian noise while the target stays clean: a denoising
autoencoder (Vincent et al., "Extracting and composing robust features with denoising
autoencoders", ICML 2008).

Logged per epoch: {train,val,test}/loss, {val,test}/{mse,psnr,ssim}, val/psnr_best; at each
validation epoch end a grid `reconstructions/epoch_XXX.png`; at test end `test/probe_acc`, the
accuracy of a linear (logistic regression) or k-NN classifier trained on the latents of the
training split and evaluated on those of the test split.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torchmetrics import MaxMetric, MeanMetric, MeanSquaredError, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from imgrec import pictures
from imgrec.tasks import optim
from imgrec.tasks.base import Task

LOSSES = ("mse", "bce")
PROBES = ("linear", "knn")
STAGES = ("train", "val", "test")
GRID_IMAGES = 8  # validation images shown in each reconstruction grid
EVAL_NOISE_SEED = 20080705  # val/test corruption is drawn from fixed seeds: epochs compare like for like


# ----------------------------------------------------------------------------- noise


def corrupt(pixels: torch.Tensor, noise_std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add Gaussian noise of `noise_std` to [0, 1] pixels. Not clamped: the corruption is exactly Gaussian with the
    stated std."""
    if noise_std == 0:
        return pixels
    return pixels + torch.randn(pixels.shape, generator=generator, device=pixels.device, dtype=pixels.dtype) * noise_std


# ----------------------------------------------------------------------------- latent probes


def linear_probe_accuracy(
    train_latents: torch.Tensor, train_labels: torch.Tensor, test_latents: torch.Tensor, test_labels: torch.Tensor
) -> float:
    """Multinomial logistic regression on standardized latents; accuracy on the test latents."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(train_latents.cpu().numpy(), train_labels.cpu().numpy())
    return float(probe.score(test_latents.cpu().numpy(), test_labels.cpu().numpy()))


def knn_accuracy(
    train_latents: torch.Tensor,
    train_labels: torch.Tensor,
    test_latents: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 5,
    chunk: int = 1024,
) -> float:
    """Majority vote of the k nearest training latents by cosine similarity (ties: the lower class)."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    bank = F.normalize(train_latents.float(), dim=1)
    k = min(k, len(bank))
    correct = 0
    for start in range(0, len(test_latents), chunk):  # chunks bound the (queries x bank) similarity matrix
        queries = F.normalize(test_latents[start : start + chunk].float(), dim=1)
        neighbours = (queries @ bank.T).topk(k, dim=1).indices
        votes = F.one_hot(train_labels[neighbours], num_classes).sum(dim=1)
        correct += int((votes.argmax(dim=1) == test_labels[start : start + chunk]).sum())
    return correct / len(test_latents)


# ----------------------------------------------------------------------------- the task


def image_metrics() -> MetricCollection:
    """Reconstruction quality in [0, 1] pixel space (PSNR over the epoch's pooled squared error)."""
    return MetricCollection(
        {
            "mse": MeanSquaredError(),
            "psnr": PeakSignalNoiseRatio(data_range=1.0),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
        }
    )


class AutoencodingTask(Task):
    """Trains `net` to reconstruct its (optionally noise-corrupted) input; one shared step for all stages."""

    learns_from = "images"

    def __init__(
        self,
        *args,
        loss: str = "mse",
        denoise_std: float = 0.0,
        probe: str = "linear",
        probe_train_size: int = 10_000,
        knn_k: int = 5,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)  # net, optimizer, scheduler, num_classes, class_names: see Task
        if loss not in LOSSES:
            raise ValueError(f"task.loss: unknown '{loss}'; choose one of {', '.join(LOSSES)}")
        if probe not in PROBES:
            raise ValueError(f"task.probe: unknown '{probe}'; choose one of {', '.join(PROBES)}")
        if not isinstance(denoise_std, (int, float)) or denoise_std < 0:
            raise ValueError(f"task.denoise_std must be a number >= 0, got {denoise_std!r}")
        for key, value in (("probe_train_size", probe_train_size), ("knn_k", knn_k)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"task.{key} must be a positive integer, got {value!r}")
        if not callable(getattr(self.net, "encode", None)):
            name = type(self.net).__name__
            raise ValueError(f"task=autoencoding needs a network with encode() (model=autoencoder), got {name}")
        self.loss_name, self.denoise_std = loss, float(denoise_std)
        self.probe, self.probe_train_size, self.knn_k = probe, probe_train_size, knn_k

        for stage in STAGES:  # attributes, not a ModuleDict: its key "train" would shadow Module.train()
            setattr(self, f"{stage}_loss", MeanMetric())
        self.val_metrics, self.test_metrics = image_metrics(), image_metrics()
        self.val_psnr_best = MaxMetric()
        self.val_psnr_best.persistent(True)  # kept in checkpoints, so a resumed run remembers its best

    # -- data plumbing

    def inputs_and_targets(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the encoder sees (corrupted when denoising) and the clean target, both [0, 1] pixels."""
        return corrupt(images, self.denoise_std, generator), images.clamp(0, 1)

    def _eval_generator(self, batch_idx: int) -> torch.Generator | None:
        if self.denoise_std == 0:
            return None
        return torch.Generator(device=self.device).manual_seed(EVAL_NOISE_SEED + batch_idx)

    # -- steps

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Reconstruction in [0, 1] pixels."""
        return self.net(self.normalize(pixels)).sigmoid()

    def criterion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "bce":
            return F.binary_cross_entropy_with_logits(logits, target)  # sigmoid + BCE, numerically stable
        return F.mse_loss(logits.sigmoid(), target)

    def model_step(self, batch, stage: str, generator: torch.Generator | None = None) -> torch.Tensor:
        images, _ = batch
        inputs, target = self.inputs_and_targets(images, generator)
        logits = self.net(self.normalize(inputs))
        loss = self.criterion(logits, target)
        getattr(self, f"{stage}_loss").update(loss.detach())
        if stage != "train":  # update(), not forward(): logged per epoch (log_stage)
            getattr(self, f"{stage}_metrics").update(logits.detach().float().sigmoid(), target.float())
        return loss

    def log_stage(self, stage: str) -> None:
        metrics = {"loss": getattr(self, f"{stage}_loss"), **(getattr(self, f"{stage}_metrics") if stage != "train" else {})}
        self.log_epoch(stage, metrics, prog_bar=("loss", "psnr"))

    def on_train_epoch_end(self) -> None:
        self.log_stage("train")

    def on_train_start(self) -> None:
        super().on_train_start()  # resuming: the random generators as the checkpoint left them
        # The sanity check must not count towards the best validation PSNR.
        self.val_loss.reset()
        self.val_metrics.reset()
        self.val_psnr_best.reset()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.model_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self.model_step(batch, "val", self._eval_generator(batch_idx))

    def test_step(self, batch, batch_idx: int) -> None:
        self.model_step(batch, "test", self._eval_generator(batch_idx))

    def on_validation_epoch_end(self) -> None:
        self.val_psnr_best(self.val_metrics["psnr"].compute())
        self.log("val/psnr_best", self.val_psnr_best.compute(), sync_dist=True, prog_bar=True)
        self.log_stage("val")
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self.log_reconstructions()

    def log_reconstructions(self) -> None:
        """Inputs above reconstructions for the first validation images: run dir + MLflow `reconstructions/`."""
        datamodule = self.trainer.datamodule
        images = datamodule.eval_pixels(datamodule.head("val", GRID_IMAGES)[0].to(self.device))
        inputs, target = self.inputs_and_targets(images, self._eval_generator(-1))
        with torch.no_grad():
            rows = {"input": inputs.clamp(0, 1), "reconstruction": self(inputs)}
        if self.denoise_std > 0:
            rows = {"clean": target, f"input + noise {self.denoise_std:g}": rows["input"],
                    "reconstruction": rows["reconstruction"]}
        epoch = self.current_epoch
        psnr = float(self.val_metrics["psnr"].compute())
        path = Path(self.trainer.default_root_dir) / "reconstructions" / f"epoch_{epoch:03d}.png"
        pictures.save_rows(rows, path, f"epoch {epoch}: validation PSNR {psnr:.2f} dB")
        self.log_file(path, "reconstructions")

    # -- latent quality for recognition

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Latents (float32, on this module's device) of uint8 images, encoded in eval-batch-sized chunks."""
        datamodule = self.trainer.datamodule
        chunk = datamodule.eval_batch_size
        with torch.no_grad():
            parts = [self.net.encode(self.normalize(datamodule.eval_pixels(images[i : i + chunk].to(self.device))))
                     .float() for i in range(0, len(images), chunk)]
        return torch.cat(parts)

    def on_test_epoch_end(self) -> None:
        self.log_stage("test")
        # Every DDP rank holds the whole dataset and the same weights, so each computes the same
        # value; none waits on another.
        datamodule = self.trainer.datamodule
        # The training split is already in random order (the train/val split shuffles it): a prefix is a random subset.
        (train_images, train_labels), (test_images, test_labels) = (datamodule.head("train", self.probe_train_size),
                                                                    datamodule.head("test"))
        train_latents, test_latents = self.encode_images(train_images), self.encode_images(test_images)
        train_labels, test_labels = train_labels.to(self.device), test_labels.to(self.device)
        if self.probe == "linear":
            accuracy = linear_probe_accuracy(train_latents, train_labels, test_latents, test_labels)
        else:
            accuracy = knn_accuracy(train_latents, train_labels, test_latents, test_labels, k=self.knn_k)
        self.log("test/probe_acc", accuracy)

    def configure_optimizers(self):
        return optim.configure(self.named_parameters(), self.optimizer, self.scheduler, optim.run_length(self.trainer))
