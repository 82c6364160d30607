"""L-infinity attacks on a classifier of [0, 1] pixels (imgrec.hub.load_model, or a task's network with its
normalization in front), from captum.robust: eps is in pixel units, and every adversarial image stays in
the eps-ball around its original and in [0, 1].

- fgsm: one signed-gradient step of size eps (Goodfellow et al. 2015);
- pgd: `steps` signed-gradient steps of `step_size` (default 2.5 eps / steps, Madry et al. 2018), from a
  uniform random start in the ball, projected back after each step; with `restarts`, an image counts as
  broken if any restart breaks it;
- fgsm_rs: one step of 1.25 eps from a random start ("fast is better than free", Wong et al. 2020);
- trades_kl: PGD on the KL divergence from the clean prediction (TRADES' inner maximization, Zhang et al. 2019).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from captum.robust import FGSM, PGD
from torch import nn

Forward = Callable[[torch.Tensor], torch.Tensor]  # [0, 1] images -> logits


@dataclass(frozen=True)
class AttackSettings:
    """What a robust accuracy means: said beside every number."""

    attack: str
    eps: float
    steps: int = 1
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = False
    norm: str = "Linf"

    def describe(self) -> str:
        if self.attack == "fgsm":
            return f"FGSM, eps {self.eps:g}, {self.norm}"
        return (f"{self.attack.upper()}-{self.steps}, eps {self.eps:g}, step {self.step_size:.4g}, "
                f"{self.restarts} restart{'s' if self.restarts > 1 else ''}, "
                f"{'random' if self.random_start else 'no random'} start, {self.norm}")


def pgd_settings(eps: float, steps: int, step_size: float | None = None, restarts: int = 1) -> AttackSettings:
    return AttackSettings("pgd", eps, steps, step_size if step_size is not None else 2.5 * eps / steps, restarts, True)


def cross_entropy_per_image(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, reduction="none")


def fgsm(forward: Forward, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    if eps == 0:
        return images.detach()
    attack = FGSM(forward, cross_entropy_per_image, lower_bound=0.0, upper_bound=1.0)
    return attack.perturb(images.detach(), epsilon=eps, target=labels).detach()


def pgd(forward: Forward, images: torch.Tensor, labels: torch.Tensor, settings: AttackSettings,
        loss: Callable = cross_entropy_per_image) -> torch.Tensor:
    """The adversarial images of `settings` (steps, step size, random start, restarts)."""
    images = images.detach()
    if settings.eps == 0:
        return images
    attack = PGD(forward, loss, lower_bound=0.0, upper_bound=1.0)
    best = None
    for _ in range(settings.restarts):
        adversarial = attack.perturb(images, radius=settings.eps, step_size=settings.step_size,
                                     step_num=settings.steps, target=labels, random_start=settings.random_start,
                                     norm=settings.norm).detach()
        if best is None:
            best = adversarial
        else:  # keep, per image, a restart that breaks it
            with torch.no_grad():
                broken = forward(adversarial).argmax(1) != labels
            best = torch.where(broken[:, None, None, None], adversarial, best)
    return best


def fgsm_rs(forward: Forward, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    return pgd(forward, images, labels, AttackSettings("fgsm_rs", eps, 1, 1.25 * eps, 1, True))


def trades_kl(forward: Forward, images: torch.Tensor, eps: float, steps: int, step_size: float) -> torch.Tensor:
    """Images in the eps-ball that move the prediction furthest (KL) from the clean one."""
    with torch.no_grad():
        clean = forward(images).float().softmax(dim=1)

    def divergence(logits, _labels):
        return F.kl_div(logits.float().log_softmax(dim=1), clean, reduction="none").sum(dim=1)

    labels = clean.argmax(dim=1)  # unused by the loss; captum wants a target
    return pgd(forward, images, labels, AttackSettings("trades_kl", eps, steps, step_size, 1, True), divergence)


def run_attack(forward: Forward, images: torch.Tensor, labels: torch.Tensor, settings: AttackSettings) -> torch.Tensor:
    if settings.attack == "fgsm":
        return fgsm(forward, images, labels, settings.eps)
    return pgd(forward, images, labels, settings)


@contextmanager
def attacking(net: nn.Module) -> Iterator[None]:
    """The net in eval mode (batch norm's running statistics, no dropout) while an attack is computed, then as
    it was; gradients on, also inside Lightning's validation and test (inference mode: clone the batch inside)."""
    was_training = net.training
    with torch.inference_mode(False), torch.enable_grad():
        net.eval()
        try:
            yield
        finally:
            net.train(was_training)
