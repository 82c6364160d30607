"""Sample quality offline: the Fréchet distance between generated and real images in the feature
space of a classifier trained by this pipeline.

The Fréchet (2-Wasserstein) distance between two Gaussians fitted to feature sets is

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1^1/2 S_2 S_1^1/2)^1/2)

(Dowson & Landau 1982). With Inception-v3 pool features it is the FID of Heusel et al., "GANs
Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017.
Here the features are the input of the last nn.Linear of an imgrec classifier trained on the same
dataset (e.g. the 128-d penultimate layer of model=cnn), so numbers compare only between runs
measured with the same classifier checkpoint, and never with published FIDs.
"""

from collections.abc import Sequence

import torch
from torch import nn


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance of (N, D) features, in float64 for the matrix square root."""
    features = features.detach().to(torch.float64)
    return features.mean(dim=0), torch.cov(features.T).reshape(features.shape[1], features.shape[1])


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues clamped at 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """d^2 between N(mu1, cov1) and N(mu2, cov2).

    Tr((S_1 S_2)^1/2) is computed as Tr((S_1^1/2 S_2 S_1^1/2)^1/2): the same eigenvalues, but of a
    symmetric matrix, so it stays real and stable when the covariances are singular (fewer
    samples than feature dimensions), where scipy.linalg.sqrtm(S_1 S_2) may turn complex.
    """
    mu1, mu2, cov1, cov2 = (t.to(torch.float64) for t in (mu1, mu2, cov1, cov2))
    root1 = _psd_sqrt(cov1)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + cov1.trace() + cov2.trace() - 2 * cross)


class ClassifierFeatures:
    """A frozen classifier: its logits and its features, the input of its last nn.Linear.

    Deliberately not an nn.Module attribute of the task, so it stays out of the GAN's
    checkpoints and optimizers; it follows the task's device when called.
    """

    def __init__(self, net: nn.Module, name: str = "classifier"):
        linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{name}: the classifier has no nn.Linear layer to take features from")
        self.net = net.eval().requires_grad_(False)
        self.feature_dim = linears[-1].in_features
        self._captured: torch.Tensor | None = None
        linears[-1].register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: Sequence[torch.Tensor], output: torch.Tensor) -> None:
        self._captured = inputs[0].flatten(1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized images (as the classifier was trained on) -> (features (N, D), logits (N, K))."""
        self.net.to(images.device)
        logits = self.net(images)
        features, self._captured = self._captured, None
        return features.float(), logits.float()
