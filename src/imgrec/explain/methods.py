"""Attribution methods (captum) for a classifier on [0, 1] pixels (imgrec.hub.load_model): each maps
(model, images (N, C, H, W), target classes (N,)) to attributions of the images' shape, in the input's
pixel grid. A method is a function of the model it is given, so the sanity check can hand it a randomized one.

Settings (chosen for 28-32 px images, stated so they can be argued with):
- integrated_gradients: black baseline, 32 steps (captum's Gauss-Legendre quadrature);
- smoothgrad: saliency averaged over 16 copies with Gaussian noise of std 0.15 (15% of the pixel range,
  Smilkov et al. 2017);
- occlusion: 4 x 4 patches of black, stride 2;
- gradcam: the last Conv2d layer's Grad-CAM (ReLU of the channel-weighted map), upsampled bilinearly;
- guided_backprop: captum's, which rewires the network's nn.ReLU modules (a functional ReLU is left as is);
- lime (ridge surrogate, as the lime package), kernel_shap: 4 x 4 pixel superpixels as features (a regular grid: Fashion-MNIST objects fill the
  frame, and SLIC would add a dependency), 200 samples, black for an absent superpixel;
- random: uniform noise, the baseline every method must beat.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import (
    GuidedBackprop,
    IntegratedGradients,
    KernelShap,
    LayerGradCam,
    Lime,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from imgrec.errors import ConfigError

Method = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
PATCH = 4  # superpixel and occlusion patch size, in pixels


def last_conv(model: nn.Module) -> nn.Conv2d | None:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def superpixels(images: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """A (1, 1, H, W) feature mask of `patch` x `patch` squares, numbered row by row; broadcast over images and channels."""
    height, width = images.shape[-2:]
    rows = torch.arange(height) // patch
    cols = torch.arange(width) // patch
    return (rows[:, None] * ((width + patch - 1) // patch) + cols[None, :])[None, None]


def saliency(model, images, targets):
    return Saliency(model).attribute(images, target=targets, abs=True)


def integrated_gradients(model, images, targets):
    return IntegratedGradients(model).attribute(images, baselines=0.0, target=targets, n_steps=32,
                                                internal_batch_size=256)


def smoothgrad(model, images, targets):
    return NoiseTunnel(Saliency(model)).attribute(images, nt_type="smoothgrad", nt_samples=16, stdevs=0.15,
                                                  nt_samples_batch_size=16, target=targets)


def occlusion(model, images, targets):
    channels = images.shape[1]
    return Occlusion(model).attribute(images, sliding_window_shapes=(channels, PATCH, PATCH),
                                      strides=(channels, 2, 2), baselines=0.0, target=targets,
                                      perturbations_per_eval=64)


def gradcam(model, images, targets):
    layer = last_conv(model)
    if layer is None:
        raise ConfigError(f"gradcam needs a convolutional layer; {type(getattr(model, 'net', model)).__name__} has none "
                          "(leave gradcam out of methods)")
    maps = LayerGradCam(model, layer).attribute(images, target=targets, relu_attributions=True)
    maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return maps.expand_as(images)


def guided_backprop(model, images, targets):
    return GuidedBackprop(model).attribute(images, target=targets)


def _surrogate(kind, model, images, targets):
    explainer = kind(model)
    mask = superpixels(images)
    # captum's Lime/KernelShap fit one surrogate per image: one image at a time
    return torch.cat([explainer.attribute(images[i : i + 1], target=targets[i : i + 1], baselines=0.0,
                                          feature_mask=mask, n_samples=200, perturbations_per_eval=50)
                      for i in range(len(images))])


def lime(model, images, targets):
    # ridge, as the lime package fits: captum's default lasso (alpha 0.01) zeroes every superpixel of a model
    # whose probabilities move little
    return _surrogate(lambda m: Lime(m, interpretable_model=SkLearnRidge(alpha=1.0)), model, images, targets)


def kernel_shap(model, images, targets):
    return _surrogate(KernelShap, model, images, targets)


def random(model, images, targets):
    return torch.rand_like(images)


METHODS: dict[str, Method] = {"saliency": saliency, "integrated_gradients": integrated_gradients,
                              "smoothgrad": smoothgrad, "occlusion": occlusion, "gradcam": gradcam,
                              "guided_backprop": guided_backprop, "lime": lime, "kernel_shap": kernel_shap,
                              "random": random}


def attribute(method: Method, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
              batch_size: int = 64) -> torch.Tensor:
    """`method`'s attributions of `images` for `targets`, in batches, detached, float32, contiguous."""
    parts = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].clone().requires_grad_(True)
        parts.append(method(model, batch, targets[start : start + batch_size]).detach().float().contiguous())
    return torch.cat(parts)


def check_methods(names, model: nn.Module) -> list[str]:
    """The methods asked for, in order; an unknown one, or gradcam without a conv layer, is one ConfigError."""
    names = list(names)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ConfigError(f"methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    if "gradcam" in names and last_conv(model) is None:
        raise ConfigError(f"methods: gradcam needs a convolutional layer, and this "
                          f"{type(getattr(model, 'net', model)).__name__} has none; leave gradcam out "
                          f"(methods=[{','.join(n for n in names if n != 'gradcam')}])")
    return names
