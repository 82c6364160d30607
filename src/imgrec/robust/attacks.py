"""L-infinity attacks on a classifier of [0, 1] pixels (imgrec.hub.load_model, or a task's network with its
normalization in front), from captum.robust: eps is in pixel units, and every adversarial image stays in
the eps-ball around its original and in [0, 1].

- fgsm: one signed-gradient step of size eps (Goodfellow et al. 2015);
- pgd: `steps` signed-gradient steps of `step_size` (default 2.5 eps / steps, Madry et al. 2018), from a
  uniform random start in the ball, projected back after each step; with `restarts`, an image counts as
  broken if any restart breaks it;
- fgsm_rs: one step of 1.25 eps from a random start ("fast is better than free", Wong et al. 2020);
- trades_kl: PGD on the KL divergence from the clean prediction (TRADES' inner maximization, Zhang et al. 2019);
- autoattack: the adversarial-robustness-toolbox's AutoAttack (Croce & Hein 2020), per image the worst of
  APGD on cross-entropy and on the difference of logits ratio (100 iterations, 5 random restarts each) and
  the black-box Square attack (5,000 queries). ART's default list also has DeepFool, which is not bounded by
  eps and is left out; the reference AutoAttack's targeted APGD and FAB are not in ART's composition.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from captum.robust import FGSM, PGD
from torch import nn

from imgrec.errors import ConfigError

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
        if self.attack == "autoattack":
            return (f"AutoAttack (ART: APGD-CE and APGD-DLR, 100 iterations x 5 restarts; Square, 5,000 queries), "
                    f"eps {self.eps:g}, {self.norm}")
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


def autoattack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, batch_size: int = 250,
               seed: int = 0, square_queries: int = 5000) -> torch.Tensor:
    """Standard AutoAttack (Croce & Hein 2020): APGD-CE, APGD-DLR, then Square with `square_queries` queries per
    image still standing (5000 is the standard budget, and most of the time an attack on a robust model takes)."""
    if eps == 0:
        return images.detach()
    try:
        from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        raise ConfigError("AutoAttack (attack=autoattack, task.adversarial.autoattack_images) needs the "
                          "adversarial-robustness-toolbox (pip install 'imgrec[robust]')") from None
    import numpy as np

    num_classes = int(model(images[:2]).shape[1])
    estimator = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]),
                                  nb_classes=num_classes, clip_values=(0.0, 1.0),
                                  device_type="gpu" if images.is_cuda else "cpu")  # gpu: torch's current device
    step = eps / 4  # APGD adapts its step size; this is only its start
    losses = ("cross_entropy", "difference_logits_ratio") if num_classes >= 3 else ("cross_entropy",)  # DLR: 3+ classes
    attacks = [AutoProjectedGradientDescent(estimator, norm=np.inf, eps=eps, eps_step=step, max_iter=100,
                                            nb_random_init=5, batch_size=batch_size, loss_type=loss, verbose=False)
               for loss in losses]
    attacks.append(SquareAttack(estimator, norm=np.inf, eps=eps, max_iter=square_queries, p_init=0.8, nb_restarts=1,
                                batch_size=batch_size, verbose=False))
    np.random.seed(seed)  # APGD's random starts and Square's draws come from numpy
    attack = AutoAttack(estimator, norm=np.inf, eps=eps, eps_step=step, attacks=attacks, batch_size=batch_size)
    adversarial = attack.generate(images.detach().cpu().numpy(), y=labels.cpu().numpy())
    return torch.from_numpy(adversarial).float().to(images.device)


def run_attack(forward: Forward, images: torch.Tensor, labels: torch.Tensor, settings: AttackSettings) -> torch.Tensor:
    if settings.attack == "fgsm":
        return fgsm(forward, images, labels, settings.eps)
    if settings.attack == "autoattack":
        return autoattack(forward, images, labels, settings.eps)
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
