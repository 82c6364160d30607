"""Adversarial training and robust evaluation for the classification task (`task.adversarial`).

The attack runs on the training batch in [0, 1] pixel space, the normalization in front of the network, so
`eps` means pixels as everywhere else in imgrec (imgrec.robust.attacks):
- pgd: Madry et al. 2018, train on PGD-`steps` examples (step `step_size`, default 2.5 eps / steps);
- fgsm_rs: Wong et al. 2020, train on one FGSM step of 1.25 eps from a random start;
- trades: Zhang et al. 2019, cross-entropy on clean images + `beta` x KL(adversarial || clean), the
  adversarial images found by PGD-`steps` on that KL.
Robust accuracy (PGD, random start) is measured at `eval_eps` (default: `eps` when training adversarially)
on the first `val_images` validation images each epoch and on every test image: `val/robust_acc`, `test/robust_acc`.
AutoAttack (ART: APGD-CE, APGD-DLR, Square), much slower, runs at test on the first `autoattack_images` test
images when that is > 0 (spread over the ranks): `test/autoattack_acc`.
"""

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from imgrec.robust.attacks import AttackSettings, attacking, autoattack, fgsm_rs, pgd, pgd_settings, trades_kl

METHODS = ("pgd", "fgsm_rs", "trades")


@dataclass(frozen=True)
class Adversarial:
    method: str | None = None
    eps: float = 0.1
    steps: int = 7
    step_size: float | None = None
    beta: float = 6.0
    eval_eps: float | None = None
    val_steps: int = 10
    test_steps: int = 20
    val_images: int = 1000
    autoattack_images: int = 0

    def __post_init__(self):
        if self.method not in (None, *METHODS):
            raise ValueError(f"task.adversarial.method: unknown '{self.method}'; choose one of {', '.join(METHODS)} "
                             "(or null)")
        if self.autoattack_images and self.robust_eps is None:
            raise ValueError("task.adversarial.autoattack_images needs an eps to attack at: set task.adversarial.eval_eps")
        if self.eps < 0 or self.steps < 1:
            raise ValueError(f"task.adversarial: eps must be >= 0 and steps >= 1, got {self.eps} and {self.steps}")

    @property
    def trains_adversarially(self) -> bool:
        """eps 0 is standard training (a sweep's reference point): no attack to pay for."""
        return self.method is not None and self.eps > 0

    @property
    def robust_eps(self) -> float | None:
        """The eps robust accuracy is measured at, or None when it is not measured."""
        return self.eval_eps if self.eval_eps is not None else (self.eps if self.method else None)

    def evaluation(self, stage: str) -> AttackSettings:
        return pgd_settings(self.robust_eps, self.val_steps if stage == "val" else self.test_steps)

    def training_loss(self, net: torch.nn.Module, forward: Callable, pixels: torch.Tensor, labels: torch.Tensor,
                      criterion: Callable) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to train on, the logits its accuracy is counted from)."""
        settings = pgd_settings(self.eps, self.steps, self.step_size)  # trades: the same steps, on its KL loss
        with attacking(net):
            if self.method == "pgd":
                adversarial = pgd(forward, pixels, labels, settings)
            elif self.method == "fgsm_rs":
                adversarial = fgsm_rs(forward, pixels, labels, self.eps)
            else:
                adversarial = trades_kl(forward, pixels, self.eps, self.steps, settings.step_size)
        if self.method != "trades":
            logits = forward(adversarial).float()
            return criterion(logits, labels), logits
        logits = forward(pixels).float()
        # the clean prediction as log-probabilities: one that underflows to 0 would make its gradient NaN
        robust = F.kl_div(forward(adversarial).float().log_softmax(dim=1), logits.log_softmax(dim=1),
                          reduction="batchmean", log_target=True)
        return criterion(logits, labels) + self.beta * robust, logits

    def robust_correct(self, net: torch.nn.Module, forward: Callable, pixels: torch.Tensor, labels: torch.Tensor,
                       stage: str) -> torch.Tensor:
        """1.0 for each image the network still classifies correctly under the evaluation attack."""
        with attacking(net):
            adversarial = pgd(forward, pixels.clone(), labels.clone(), self.evaluation(stage))
            with torch.no_grad():
                return (forward(adversarial).argmax(dim=1) == labels).float()

    def autoattack_correct(self, pixel_model: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """1.0 for each image the network still classifies correctly under AutoAttack at the evaluation eps.
        ART moves and re-modes the model it is given: it gets a copy, in fp32 (no autocast)."""
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(pixels.device.type, enabled=False):
            model = copy.deepcopy(pixel_model).float().eval()  # outside inference mode: its weights need autograd
            pixels, labels = pixels.clone().float(), labels.clone()
            adversarial = autoattack(model, pixels, labels, self.robust_eps)
            with torch.no_grad():
                return (model(adversarial).argmax(dim=1) == labels).float()
