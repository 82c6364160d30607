"""Supervised classification: any network that maps images to class logits."""

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import WeightAveraging
from torchmetrics import ConfusionMatrix, MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision, MulticlassRecall

from imgrec.tasks import optim
from imgrec.tasks.adversarial import Adversarial
from imgrec.tasks.base import Task

LOSSES = ("cross_entropy", "label_smoothing", "mse")
STAGES = ("train", "val", "test")
AUGMIX_CONSISTENCY_WEIGHT = 12.0  # AugMix's lambda (Hendrycks et al. 2020, its reference's cifar.py)


def jensen_shannon(*logits: torch.Tensor) -> torch.Tensor:
    """AugMix's consistency loss: the mean KL divergence of each prediction from their mixture, whose probabilities
    are clamped to [1e-7, 1] before the log, as the reference does. Each prediction enters as log-probabilities:
    a probability that underflows to 0 (logits 104 apart) would make the reference's gradient NaN."""
    log_probs = [part.log_softmax(dim=1) for part in logits]
    mixture = torch.clamp(sum(p.exp() for p in log_probs) / len(log_probs), 1e-7, 1).log()
    return sum(F.kl_div(mixture, p, reduction="batchmean", log_target=True) for p in log_probs) / len(log_probs)


def dominant(labels: torch.Tensor) -> torch.Tensor:
    """The labels, or a mixed batch's dominant label (the larger share of its soft target): what train/acc counts
    under mixup and CutMix."""
    return labels.argmax(dim=1) if labels.ndim == 2 else labels


def summary_metrics(num_classes: int) -> MetricCollection:
    """Accuracy over all samples; precision, recall and F1 averaged over classes."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        }
    )


def per_class_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "precision": MulticlassPrecision(num_classes, average=None),
            "recall": MulticlassRecall(num_classes, average=None),
            "f1": MulticlassF1Score(num_classes, average=None),
        }
    )


def ema_with_warmup(decay: float):
    """An exponential moving average whose decay grows with the number n of updates, min(decay, (1 + n) / (10 + n))
    (TensorFlow's ExponentialMovingAverage with num_updates): a run of a few thousand steps is not an average of
    mostly its random initial weights (at a fixed 0.999 they still weigh 42% after 860 steps)."""

    def average(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        rate = torch.clamp((1 + updates) / (10 + updates), max=decay)
        return rate * averaged + (1 - rate) * current

    return average


class ClassificationTask(Task):
    takes_soft_targets = True

    """Trains `net` with one shared step for train/val/test.

    Logged per epoch: {train,val,test}/loss, acc (micro), precision, recall, f1 (macro), and
    val/acc_best. At test, `test_report` holds the confusion matrix and per-class metrics for
    the ClassificationReport callback to render.
    """

    def __init__(
        self,
        *args,
        loss: str = "cross_entropy",
        label_smoothing: float = 0.1,
        tta_flip: bool = False,
        tta_translate: int = 0,
        adversarial: dict[str, Any] | None = None,
        ema: float | None = None,
        **kwargs,
    ):
        """`tta_flip`: at validation and test, average the logits of each image and its mirror image.
        `tta_translate`: at validation and test, average those with the logits of the image shifted by this many
        pixels diagonally both ways (reflected at the border; airbench's test-time translations).
        `adversarial`: adversarial training and robust accuracy (imgrec.tasks.adversarial.Adversarial).
        `ema`: validate, test and keep an exponential moving average of the weights with this decay."""
        super().__init__(*args, **kwargs)  # net, optimizer, scheduler, num_classes, class_names: see Task
        if loss not in LOSSES:
            raise ValueError(f"task.loss: unknown '{loss}'; choose one of {', '.join(LOSSES)}")
        if ema is not None and not 0 < ema < 1:
            raise ValueError(f"task.ema: a decay between 0 and 1 (0.999, say) or null, got {ema}")
        self.ema = ema
        self.augmix = False  # data.augment.augmix, read from the datamodule in setup
        self.loss_name = loss
        self.label_smoothing = label_smoothing if loss == "label_smoothing" else 0.0
        self.tta_flip = tta_flip
        if not isinstance(tta_translate, int) or tta_translate < 0:
            raise ValueError(f"task.tta_translate: pixels to shift by, an int >= 0, got {tta_translate!r}")
        self.tta_translate = tta_translate
        self.adversarial = Adversarial(**(adversarial or {}))

        for stage in STAGES:  # attributes, not a ModuleDict: its key "train" would shadow Module.train()
            setattr(self, f"{stage}_metrics", summary_metrics(self.num_classes))
            setattr(self, f"{stage}_loss", MeanMetric())
        if self.adversarial.robust_eps is not None:  # val/robust_acc, test/robust_acc
            self.val_robust_acc, self.test_robust_acc = MeanMetric(), MeanMetric()
        if self.adversarial.autoattack_images:
            self.test_autoattack_acc = MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints, so a resumed run remembers its best
        self.test_confusion = ConfusionMatrix(task="multiclass", num_classes=self.num_classes)
        self.test_per_class = per_class_metrics(self.num_classes)
        self.test_report: dict[str, Any] | None = None

    def criterion(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss against labels (N,), or soft targets (N, classes) from mixup or CutMix."""
        if self.loss_name == "mse":
            target = labels if labels.ndim == 2 else F.one_hot(labels, self.num_classes)
            return F.mse_loss(logits.softmax(dim=1), target.to(logits.dtype))
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # data.augment.augmix: each training batch holds the images, then two AugMix views of them (the datamodule's)
        augment = getattr(getattr(self.trainer, "datamodule", None), "augment", None)
        self.augmix = bool(getattr(augment, "augmix", False))

    def model_step(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch
        if stage == "train" and self.augmix:  # cross-entropy on the images, consistency with their AugMix views
            logits, *views = self(images).float().chunk(3)
            loss = self.criterion(logits, labels) + AUGMIX_CONSISTENCY_WEIGHT * jensen_shannon(logits, *views)
        elif stage == "train" and self.adversarial.trains_adversarially:
            loss, logits = self.adversarial.training_loss(self.net, self.forward, images.clamp(0, 1), labels,
                                                          self.criterion)
        else:
            logits = self.test_time_logits(images) if stage != "train" else self(images).float()
            loss = self.criterion(logits, labels)
        if stage != "train" and self.adversarial.robust_eps is not None:
            self.update_robust(stage, images, labels)
        preds = logits.argmax(dim=1)
        # update(), not forward(): metrics are logged per epoch (log_stage), so per-batch values would be wasted work
        getattr(self, f"{stage}_loss").update(loss.detach())
        getattr(self, f"{stage}_metrics").update(preds, dominant(labels))
        return loss, logits.detach(), labels

    def test_time_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The logits (fp32, under bf16 autocast too) averaged over the test-time views: the mirror image with
        tta_flip; with tta_translate, half the weight on the two diagonal shifts (airbench's TTA)."""

        def flipped(x: torch.Tensor) -> torch.Tensor:
            logits = self(x).float()
            return (logits + self(x.flip(3)).float()) / 2 if self.tta_flip else logits

        logits = flipped(images)
        if self.tta_translate:
            n, (height, width) = self.tta_translate, images.shape[-2:]
            padded = F.pad(images, (n, n, n, n), mode="reflect")
            shifted = (flipped(padded[..., :height, :width]) + flipped(padded[..., 2 * n:, 2 * n:])) / 2
            logits = (logits + shifted) / 2
        return logits

    def update_robust(self, stage: str, images: torch.Tensor, labels: torch.Tensor) -> None:
        metric = getattr(self, f"{stage}_robust_acc")
        if stage == "val" and metric.weight.sum() >= self.adversarial.val_images:  # a subset, each epoch
            return
        pixels = images.clamp(0, 1)
        metric.update(self.adversarial.robust_correct(self.net, self.forward, pixels, labels, stage))
        if stage == "test" and self.adversarial.autoattack_images:
            self.update_autoattack(pixels, labels)

    def update_autoattack(self, pixels: torch.Tensor, labels: torch.Tensor) -> None:
        """AutoAttack on the first autoattack_images test images (each rank its share of them)."""
        share = -(-self.adversarial.autoattack_images // self.trainer.world_size)  # rounded up
        wanted = share - int(self.test_autoattack_acc.weight.sum())
        if wanted > 0:
            pixel_model = torch.nn.Sequential(self.normalization, self.net)
            self.test_autoattack_acc.update(self.adversarial.autoattack_correct(pixel_model, pixels[:wanted], labels[:wanted]))

    def log_stage(self, stage: str) -> None:
        metrics = {"loss": getattr(self, f"{stage}_loss"), **getattr(self, f"{stage}_metrics")}
        if stage != "train" and self.adversarial.robust_eps is not None:
            metrics["robust_acc"] = getattr(self, f"{stage}_robust_acc")
        if stage == "test" and self.adversarial.autoattack_images:
            metrics["autoattack_acc"] = self.test_autoattack_acc
        self.log_epoch(stage, metrics, prog_bar=("loss", "acc", "robust_acc"))

    def on_train_start(self) -> None:
        super().on_train_start()  # resuming: the random generators as the checkpoint left them
        # The sanity check must not count towards the best validation accuracy.
        self.val_loss.reset()
        self.val_metrics.reset()
        self.val_acc_best.reset()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self.model_step(batch, "train")
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self.model_step(batch, "val")

    def on_train_epoch_end(self) -> None:
        self.log_stage("train")

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_metrics["acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)
        self.log_stage("val")

    def on_test_epoch_start(self) -> None:
        self.test_outputs: list[torch.Tensor] = []

    def test_step(self, batch, batch_idx: int) -> None:
        _, logits, labels = self.model_step(batch, "test")
        top_prob, preds = logits.softmax(dim=1).max(dim=1)
        self.test_confusion.update(preds, labels)
        self.test_per_class.update(preds, labels)
        self.test_outputs.append(torch.stack([preds.float(), labels.float(), top_prob]))

    def on_test_epoch_end(self) -> None:
        self.log_stage("test")
        # compute() and all_gather() gather across DDP ranks, so every rank calls them; rank zero renders the report.
        self.test_report = {
            "confusion": self.test_confusion.compute().cpu(),
            "per_class": {name: values.cpu() for name, values in self.test_per_class.compute().items()},
            "class_names": self.class_names,
            "predictions": self.gathered_test_outputs(),
        }
        self.test_confusion.reset()
        self.test_per_class.reset()

    def gathered_test_outputs(self) -> dict[str, torch.Tensor]:
        """Every test image's predicted class, label and top probability, in test-set order. Under DDP each rank
        tested every world_size-th image (Lightning's DistributedSampler, unshuffled, padded to equal shares): the
        gathered shares are interleaved back and the padding dropped."""
        outputs = torch.cat(self.test_outputs, dim=1) if self.test_outputs else torch.zeros(3, 0)
        self.test_outputs = []
        if self.trainer.world_size > 1:
            outputs = self.all_gather(outputs)  # (world_size, 3, share)
            outputs = outputs.permute(1, 2, 0).reshape(3, -1)  # image i of rank r was image r + i * world_size
            dataloader = self.trainer.test_dataloaders
            dataset = getattr(dataloader, "dataset", None)
            total = outputs.shape[1] if dataset is None else getattr(dataset, "num_images", None) or len(dataset)
            outputs = outputs[:, :total]
        outputs = outputs.cpu()
        return {"pred": outputs[0].long(), "label": outputs[1].long(), "prob": outputs[2]}

    def configure_optimizers(self):
        return optim.configure(self.named_parameters(), self.optimizer, self.scheduler, optim.run_length(self.trainer))

    def configure_callbacks(self) -> list:
        """With `ema`: Lightning's weight average (updated after each optimizer step, batch-norm statistics too), which
        validation uses and checkpoints keep as their weights (the raw ones beside them), so the test and
        imgrec.hub use it. Asked again at each stage, the task hands a new one to trainer.test, which loads the
        checkpoint's averaged weights as they are."""
        return [WeightAveraging(avg_fn=ema_with_warmup(self.ema))] if self.ema else []
