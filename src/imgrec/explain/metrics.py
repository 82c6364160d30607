"""Is an explanation faithful to the model? Per image, for one method's attributions:

- deletion / insertion AUC (Petsiuk et al. 2018, RISE): pixels ordered most-important first (attribution
  summed over channels) are removed (set to black) from the image, or inserted into a blurred copy of it, in
  `steps` equal fractions; the area under the target class's probability curve. Deletion: lower is more
  faithful; insertion: higher is;
- infidelity (Yeh et al. 2019, captum.metrics): how badly attribution · perturbation predicts the output's
  change under small Gaussian perturbations (std 0.03), normalized; lower is better;
- sensitivity-max (captum.metrics): how much the explanation itself moves when the input moves by at most
  0.02 per pixel; lower is more stable;
- the sanity check of Adebayo et al. 2018: the model's layers are re-initialized from the top down
  (cascading randomization) and the method run again on each randomized model; the Spearman rank
  correlation of |attributions| with the original ones. A method that explains the model changes: at the
  end of the cascade its correlation falls below `SANITY_THRESHOLD`.
"""

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from captum.metrics import infidelity, sensitivity_max
from scipy.stats import spearmanr
from torch import nn

from imgrec.explain.methods import Method, attribute

SANITY_THRESHOLD = 0.5  # |Spearman rho| with the original attributions once every layer is randomized


def blurred(images: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """A Gaussian blur of each channel (the insertion curve's starting point, as in RISE)."""
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius,) * 4, mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


@torch.no_grad()
def deletion_insertion(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, attributions: torch.Tensor,
                       steps: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """(deletion AUC, insertion AUC) per image."""
    n, channels, height, width = images.shape
    pixels = height * width
    order = attributions.sum(dim=1).view(n, -1).argsort(dim=1, descending=True)  # most important first
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(pixels).expand(n, -1))  # each pixel's place in the order
    ranks = ranks.view(n, 1, height, width)
    start = blurred(images)
    deletion, insertion = [], []
    for k in torch.linspace(0, pixels, steps + 1).round().long().tolist():
        chosen = (ranks < k).to(images.dtype)  # the first k pixels of the order
        deletion.append(_probability(model, images * (1 - chosen), targets))
        insertion.append(_probability(model, start * (1 - chosen) + images * chosen, targets))
    fractions = np.linspace(0, 1, steps + 1)
    return (np.trapezoid(np.stack(deletion, 1), fractions, axis=1),
            np.trapezoid(np.stack(insertion, 1), fractions, axis=1))


def _probability(model, images, targets) -> np.ndarray:
    return model(images).float().softmax(dim=1).gather(1, targets[:, None])[:, 0].numpy()


def gaussian_perturbation(std: float = 0.03) -> Callable:
    def perturb(inputs: torch.Tensor):
        noise = torch.randn_like(inputs) * std
        return noise, inputs - noise

    return perturb


def infidelity_of(model, images, targets, attributions, samples: int = 10) -> np.ndarray:
    return infidelity(model, gaussian_perturbation(), images, attributions, target=targets,
                      n_perturb_samples=samples, normalize=True).detach().numpy()


def sensitivity_of(method: Method, model, images, targets, samples: int = 5) -> np.ndarray:
    def explain(inputs, target):  # captum passes and expects tuples of tensors, and views them: contiguous ones
        # (Grad-CAM's map expanded over 3 channels, and gradients of a channels_last RGB net, are not)
        return (method(model, inputs[0] if isinstance(inputs, tuple) else inputs, target).contiguous(),)

    return sensitivity_max(explain, images, target=targets, perturb_radius=0.02,
                           n_perturb_samples=samples).detach().numpy()


def randomization_cascade(model: nn.Module, points: int | None = None) -> list[tuple[str, int, nn.Module]]:
    """(the layer just randomized, how many layers are randomized, a copy of the model with that layer and
    every layer above it re-initialized), from the output layer down to the first; `points` of them, evenly
    spread and always with the first and the last (None: every layer)."""
    layers = [name for name, m in model.named_modules()
              if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False))]
    keep = set(range(len(layers))) if not points else set(np.linspace(0, len(layers) - 1, points).round().astype(int))
    randomized = copy.deepcopy(model)
    cascade = []
    torch.manual_seed(0)
    for depth, name in enumerate(reversed(layers)):
        randomized.get_submodule(name).reset_parameters()
        if depth in keep:
            cascade.append((name, depth + 1, copy.deepcopy(randomized)))
    return cascade


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman's rho of |a| and |b|, per image."""
    a, b = a.abs().flatten(1).numpy(), b.abs().flatten(1).numpy()
    return np.array([np.nan_to_num(spearmanr(x, y).statistic) for x, y in zip(a, b)])


def sanity(method: Method, model, images, targets, original: torch.Tensor,
           points: int | None = None) -> list[tuple[str, int, np.ndarray]]:
    """Down the cascade: (the layer, how many are randomized, each image's rank correlation with the original)."""
    return [(name, depth, rank_correlation(original, attribute(method, randomized, images, targets)))
            for name, depth, randomized in randomization_cascade(model, points)]
