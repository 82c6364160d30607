"""Semi-supervised classification: a few labeled images and many unlabeled ones (data.labels_per_class).

Each training step sees a batch of labeled images and `unlabeled_ratio` times as many unlabeled ones
(imgrec.data.datamodule). The loss is cross-entropy on the labeled images plus `unlabeled_weight` times the
cross-entropy of the unlabeled images against pseudo-labels: the net's own prediction for a weakly augmented view
(the data's augmentation, data.augment: flips and translations), kept only where its confidence reaches `threshold`.

- fixmatch (Sohn et al. 2020): the pseudo-label is learnt from a strongly augmented view of the same image
  (RandAugment, then cutout of `strong_cutout` of the side: imgrec.data.randaugment);
- pseudo_label (Lee 2013, with FixMatch's confidence threshold, as USB's benchmark runs it): from the weak view
  itself, its weight ramped up linearly over the first `rampup` of training (null: 0.4, USB's).

All views go through the net in one batch (batch norm sees them together, as in FixMatch). Evaluation uses an
exponential moving average of the weights (`ema`, see ClassificationTask). Logged each epoch beside the classification
metrics (whose train/* are the labeled images'): train/loss_labeled, train/loss_unlabeled, train/mask_rate (the share
of unlabeled images above the threshold) and train/pseudo_label_acc (how many of those pseudo-labels are right: the
unlabeled images' labels are known here and used for this diagnostic only, never for training).
"""

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from imgrec.data.augment import cutout
from imgrec.data.randaugment import rand_augment
from imgrec.tasks.classification import ClassificationTask

METHODS = ("fixmatch", "pseudo_label")
DEFAULT_RAMPUP = {"fixmatch": 0.0, "pseudo_label": 0.4}  # fraction of training; FixMatch has none


class SemiSupervisedTask(ClassificationTask):
    learns_from = "labeled+unlabeled"
    takes_soft_targets = False  # its batches are labeled and unlabeled images, never mixed

    def __init__(
        self,
        *args,
        method: str = "fixmatch",
        threshold: float = 0.95,
        unlabeled_ratio: int = 7,
        unlabeled_weight: float = 1.0,
        rampup: float | None = None,
        strong_ops: int = 2,
        strong_magnitude: float = 10.0,
        strong_cutout: float = 0.5,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)  # net, optimizer, ..., loss, ema: see ClassificationTask
        if method not in METHODS:
            raise ValueError(f"task.method: unknown '{method}'; choose one of {', '.join(METHODS)}")
        if not 0 <= threshold <= 1:
            raise ValueError(f"task.threshold: a confidence in [0, 1], got {threshold}")
        if not isinstance(unlabeled_ratio, int) or unlabeled_ratio < 1:
            raise ValueError(f"task.unlabeled_ratio: unlabeled images per labeled one, an integer >= 1, "
                             f"got {unlabeled_ratio}")
        rampup = DEFAULT_RAMPUP[method] if rampup is None else rampup
        if not 0 <= rampup < 1 or unlabeled_weight < 0 or not 0 <= strong_cutout < 1 or not 0 < strong_magnitude <= 10:
            raise ValueError("task: rampup in [0, 1), unlabeled_weight >= 0, strong_cutout in [0, 1) and "
                             "strong_magnitude in (0, 10] expected")
        if self.adversarial.trains_adversarially:
            raise ValueError("task.adversarial.method: semi-supervised training does not train adversarially")
        self.method, self.threshold, self.unlabeled_ratio = method, threshold, unlabeled_ratio
        self.unlabeled_weight, self.rampup = unlabeled_weight, rampup
        self.strong_ops, self.strong_magnitude, self.strong_cutout = strong_ops, strong_magnitude, strong_cutout
        self.loss_labeled, self.loss_unlabeled = MeanMetric(), MeanMetric()
        self.mask_rate, self.pseudo_label_acc = MeanMetric(), MeanMetric()

    def weak(self, pixels: torch.Tensor) -> torch.Tensor:
        """The data's own training view (imgrec.data.datamodule: crops to the network's size, flips, translations)."""
        return self.trainer.datamodule.train_views(pixels)

    def strong(self, pixels: torch.Tensor) -> torch.Tensor:
        """The weak view's flips and translations, then RandAugment, then cutout (filled with the mean pixel)."""
        strong = rand_augment(self.weak(pixels).clamp(0, 1), self.strong_ops, self.strong_magnitude)
        return cutout(strong, round(self.strong_cutout * strong.shape[-1]), self.normalization.mean.view(1, -1, 1, 1))

    def unlabeled_scale(self) -> float:
        """The unlabeled loss's weight now: ramped up over the first `rampup` of the run's steps."""
        if self.rampup == 0:
            return self.unlabeled_weight
        progress = self.global_step / max(1, self.trainer.estimated_stepping_batches)
        return self.unlabeled_weight * min(1.0, progress / self.rampup)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch["labeled"]
        unlabeled, hidden_labels = batch["unlabeled"]  # hidden_labels: diagnostics only
        with torch.autocast(self.device.type, enabled=False):  # augmentation in fp32, as the datamodule's
            views = [images, self.weak(unlabeled), *([self.strong(unlabeled)] if self.method == "fixmatch" else [])]
        logits = self(torch.cat(views)).float()
        labeled_logits, weak_logits, *strong_logits = logits.split([len(images), *[len(unlabeled)] * (len(views) - 1)])
        confidence, pseudo_labels = weak_logits.detach().softmax(dim=1).max(dim=1)
        mask = confidence >= self.threshold
        student = strong_logits[0] if self.method == "fixmatch" else weak_logits
        loss_unlabeled = (F.cross_entropy(student, pseudo_labels, reduction="none") * mask).mean()
        loss_labeled = self.criterion(labeled_logits, labels)
        loss = loss_labeled + self.unlabeled_scale() * loss_unlabeled

        self.train_loss.update(loss.detach())
        self.train_metrics.update(labeled_logits.argmax(dim=1), labels)
        self.loss_labeled.update(loss_labeled.detach())
        self.loss_unlabeled.update(loss_unlabeled.detach())
        self.mask_rate.update(mask.float().mean())
        if mask.any():
            self.pseudo_label_acc.update((pseudo_labels[mask] == hidden_labels[mask]).float())
        return loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        metrics = {"loss_labeled": self.loss_labeled, "loss_unlabeled": self.loss_unlabeled,
                   "mask_rate": self.mask_rate}
        if self.pseudo_label_acc.update_called:  # none above the threshold this epoch: no accuracy to give
            metrics["pseudo_label_acc"] = self.pseudo_label_acc
        self.log_epoch("train", metrics)
