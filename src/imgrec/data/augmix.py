"""AugMix (Hendrycks et al. 2020, "AugMix: a simple data processing method to improve robustness and uncertainty")
on whole batches, as its reference implementation (github.com/google-research/augmix) makes each image:

    mixed = (1 - m) * image + m * sum_i w_i * chain_i(image),   w ~ Dirichlet(alpha, ..., alpha), m ~ Beta(alpha, alpha)

with `width` chains of 1 to 3 operations (`depth`; -1: drawn per chain) drawn from its list, which leaves out every
operation that overlaps a CIFAR-10-C corruption (no noise, blur, brightness, contrast or colour; its rotate, shear
and translate do overlap MNIST-C's), each at a level drawn from U(0.1, severity) out of 10, as its int_parameter /
float_parameter map it. Images are [0, 1] pixels (N, C, H, W);
every draw is per image, from torch's generator. Training adds the Jensen-Shannon consistency loss between the clean
image and two AugMix views (imgrec.tasks.classification).
"""

import torch
from torch.distributions import Beta, Dirichlet

from imgrec.data.randaugment import OPERATIONS, affine, per_image, posterize, random_signs


def translate(axis: str):
    """Up to a third of the side, whole pixels (the reference's int_parameter of IMAGE_SIZE / 3)."""
    def apply(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        pixels = torch.trunc(s.abs() * x.shape[-1] / 3) * s.sign()
        shift = 2 * pixels / x.shape[-1]  # affine_grid's [-1, 1] spans the side
        one, zero = torch.ones_like(s), torch.zeros_like(s)
        rows = [[one, zero, -shift], [zero, one, zero]] if axis == "x" else [[one, zero, zero], [zero, one, -shift]]
        return affine(x, rows)

    return apply


# name -> f(images, signed level / 10): the reference's `augmentations` list and magnitudes
AUGMIX_OPERATIONS = {
    "autocontrast": OPERATIONS["autocontrast"],
    "equalize": OPERATIONS["equalize"],
    "posterize": lambda x, s: posterize(x, 4 - torch.trunc(4 * s.abs())),  # 4 - int(level * 4 / 10) bits
    "rotate": lambda x, s: OPERATIONS["rotate"](x, torch.trunc(30 * s) / 30),  # int(level * 30 / 10) degrees
    "solarize": OPERATIONS["solarize"],  # threshold 1 - level / 10
    "shear_x": OPERATIONS["shear_x"],  # level * 0.3 / 10
    "shear_y": OPERATIONS["shear_y"],
    "translate_x": translate("x"),
    "translate_y": translate("y"),
}


def augmix(images: torch.Tensor, severity: float = 3, width: int = 3, depth: int = -1,
           alpha: float = 1.0) -> torch.Tensor:
    """One AugMix view of each image."""
    count, device = images.shape[0], images.device
    weights = Dirichlet(torch.full((width,), float(alpha))).sample((count,)).to(images)  # (N, width)
    keep = Beta(float(alpha), float(alpha)).sample((count,)).to(images).view(-1, 1, 1, 1)
    mixed = torch.zeros_like(images)
    for chain in range(width):
        length = torch.randint(1, 4, (count,), device=device) if depth <= 0 else torch.full((count,), depth, device=device)
        view = images
        for step in range(int(length.max())):
            drawn = torch.randint(len(AUGMIX_OPERATIONS), (count,), device=device)
            level = (torch.rand(count, device=device) * (severity - 0.1) + 0.1) / 10
            view = per_image(view, AUGMIX_OPERATIONS, torch.where(length > step, drawn, -1),
                             level * random_signs(count, device))
        mixed += weights[:, chain].view(-1, 1, 1, 1) * view
    return (1 - keep) * images + keep * mixed
