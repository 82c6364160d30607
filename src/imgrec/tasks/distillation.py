"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a classifier (the student, any family) learns from a trained
one (the teacher) as well as from the labels:

    loss = alpha * KL(softmax(teacher / T) || softmax(student / T)) * T^2 + (1 - alpha) * cross-entropy(student)

The teacher (`task.teacher`, loaded by imgrec.train through imgrec.hub: a model on [0, 1] pixels) is frozen and in
eval mode; it sees each training batch as the student does (augmented, in [0, 1] pixels), under the same precision.
It must classify the same classes from images of the same shape. At test the run also logs the teacher's accuracy
on the same test images, `test/teacher_acc`; the teacher's URI is the run's param task.teacher.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from imgrec.tasks.classification import ClassificationTask, dominant


class Teacher:
    """The frozen teacher, kept out of the task's modules: not trained, not in the checkpoint or the weight average,
    moved to the batch's device when first used."""

    def __init__(self, model: nn.Module):
        self.model = model.eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        self.model.to(pixels.device)
        return self.model(pixels).float()


class DistillationTask(ClassificationTask):
    def __init__(self, *args, teacher: nn.Module | None = None, alpha: float = 0.9, temperature: float = 4.0,
                 **kwargs):
        """`teacher`: an imgrec.hub.PixelModel of the same classes and image shape (the config names it by URI)."""
        super().__init__(*args, **kwargs)  # net, optimizer, ..., loss, ema: see ClassificationTask
        if teacher is None or not hasattr(teacher, "spec"):
            raise ValueError("task.teacher: a trained classifier is required (runs:/<run_id>, a .ckpt path or "
                             "models:/<name>@<alias>)")
        spec = teacher.spec
        if list(teacher.class_names) != [str(n) for n in self.class_names]:
            raise ValueError(f"task.teacher: it classifies {len(teacher.class_names)} classes of {spec.data} "
                             f"({', '.join(list(teacher.class_names)[:3])}, ...); the student learns "
                             f"{len(self.class_names)} ({', '.join(map(str, self.class_names[:3]))}, ...)")
        if not 0 <= alpha <= 1 or temperature <= 0:
            raise ValueError(f"task: alpha in [0, 1] and temperature > 0 expected, got {alpha} and {temperature}")
        if self.adversarial.trains_adversarially:
            raise ValueError("task.adversarial.method: distillation does not train adversarially")
        self.teacher, self.teacher_shape = Teacher(teacher), tuple(spec.in_shape)
        self.alpha, self.temperature = alpha, temperature
        self.train_loss_distill, self.test_teacher_acc = MeanMetric(), MeanMetric()

    def check_data(self, datamodule) -> None:
        super().check_data(datamodule)
        if datamodule.augment.augmix:
            raise ValueError("data.augment.augmix: distillation has its own training loss; choose one")
        shape = tuple(datamodule.in_shape)
        if shape != self.teacher_shape:
            raise ValueError(f"task.teacher: it takes {'x'.join(map(str, self.teacher_shape))} images; this data "
                             f"has {'x'.join(map(str, shape))}")

    def distillation_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        return F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1),
                        reduction="batchmean") * t * t

    def model_step(self, batch, stage: str):
        if stage != "train":
            return super().model_step(batch, stage)
        images, labels = batch
        logits = self(images).float()
        soft = self.distillation_loss(logits, self.teacher(images.clamp(0, 1)))
        loss = self.alpha * soft + (1 - self.alpha) * self.criterion(logits, labels)
        self.train_loss.update(loss.detach())
        self.train_loss_distill.update(soft.detach())
        self.train_metrics.update(logits.argmax(dim=1), dominant(labels))
        return loss, logits.detach(), labels

    def test_step(self, batch, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        images, labels = batch
        self.test_teacher_acc.update((self.teacher(images).argmax(1) == labels).float())

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log_epoch("train", {"loss_distill": self.train_loss_distill})

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.log_epoch("test", {"teacher_acc": self.test_teacher_acc})
