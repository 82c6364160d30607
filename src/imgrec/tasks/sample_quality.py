"""How good a generator's samples are, offline: the Fréchet distance between generated and real images
in the feature space of a classifier trained by this pipeline (and, optionally, torchmetrics' Inception FID).

The Fréchet (2-Wasserstein) distance between two Gaussians fitted to feature sets is

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1^1/2 S_2 S_1^1/2)^1/2)

(Dowson & Landau 1982). With Inception-v3 pool features it is the FID of Heusel et al., "GANs
Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017.
Here the features are the input of the last nn.Linear of an imgrec classifier trained on the same
dataset (e.g. the 128-d penultimate layer of model=cnn), so numbers compare only between runs
measured with the same classifier checkpoint, and never with published FIDs.
"""

import logging
from collections.abc import Sequence

import torch
from torch import nn

from imgrec.errors import one_line

log = logging.getLogger(__name__)


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

    The classifier takes [0, 1] pixels (imgrec.hub.load_model), so it sees generated images exactly as
    it saw its own training images. Deliberately not an nn.Module attribute of the task, so it stays
    out of the GAN's checkpoints and optimizers; it follows the task's device when called.
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
        """[0, 1] images -> (features (N, D), logits (N, K))."""
        self.net.to(images.device)
        logits = self.net(images)
        features, self._captured = self._captured, None
        return features.float(), logits.float()


def make_inception_fid() -> nn.Module | None:
    """torchmetrics' FID when torch-fidelity and the Inception weights are available, else None (warned)."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=2048, normalize=True, reset_real_features=False)
    except Exception as err:  # missing torch-fidelity, no network for the weights, ...
        log.warning("task.inception_fid: Inception FID unavailable, skipped (%s)", one_line(err))
        return None


def _rgb(images: torch.Tensor) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class SampleQuality:
    """Per stage (val, test): generated images against the first `samples` real images of that split.

    Real images are measured once per stage (neither they nor the classifier change): their features are
    gathered while the first epoch's batches pass, then kept as a mean and a covariance. `names(stage)`
    lists exactly the metrics `measure(stage, ...)` returns.
    """

    def __init__(self, classifier: nn.Module | None, conditional: bool, samples: int, inception: bool):
        self.features = ClassifierFeatures(classifier, "task.fd_classifier") if classifier is not None else None
        self.conditional, self.samples = conditional, samples
        self.inception: dict[str, nn.Module] = {}
        if inception:
            first = make_inception_fid()
            if first is not None:
                self.inception = {"val": first, "test": make_inception_fid() or first}
        self._real: dict[str, list[torch.Tensor]] = {}
        self._real_stats: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}

    @property
    def active(self) -> bool:
        return self.features is not None or bool(self.inception)

    def names(self, stage: str) -> list[str]:
        names = []
        if self.features is not None:
            names.append(f"{stage}/fd_classifier")
            if self.conditional:
                names.append(f"{stage}/cond_acc")
        if stage in self.inception:
            names.append(f"{stage}/fid_inception")
        return names

    def needs_real(self, stage: str) -> bool:
        return self.active and stage not in self._real_stats

    def add_real(self, stage: str, pixels: torch.Tensor) -> None:
        """Gather real [0, 1] images of `stage` until `samples` are seen."""
        collected = self._real.setdefault(stage, [])
        missing = self.samples - sum(len(f) for f in collected)
        if missing <= 0:
            return
        pixels = pixels[:missing]
        # the classifier's features, or an empty row per image that counts them for the Inception FID
        collected.append(self.features(pixels)[0] if self.features is not None else pixels.new_empty(len(pixels), 0))
        if stage in self.inception:
            self.inception[stage].to(pixels.device).update(_rgb(pixels), real=True)

    def measure(self, stage: str, generated: torch.Tensor, labels: torch.Tensor, chunk: int) -> dict[str, float]:
        """The metrics of names(stage) for generated [0, 1] images (made for `labels`); {} before any real image."""
        if stage not in self._real_stats:
            gathered = self._real.pop(stage, [])
            if not gathered:
                return {}  # no real images seen (e.g. limit_val_batches=0)
            self._real_stats[stage] = feature_stats(torch.cat(gathered)) if self.features is not None else None
        values = {}
        if self.features is not None:
            outputs = [self.features(generated[i : i + chunk]) for i in range(0, len(generated), chunk)]
            features, logits = torch.cat([f for f, _ in outputs]), torch.cat([lg for _, lg in outputs])
            values[f"{stage}/fd_classifier"] = frechet_distance(*self._real_stats[stage], *feature_stats(features))
            if self.conditional:
                values[f"{stage}/cond_acc"] = float((logits.argmax(dim=1) == labels).float().mean())
        if stage in self.inception:
            fid = self.inception[stage].to(generated.device)
            fid.update(_rgb(generated.float()), real=False)
            values[f"{stage}/fid_inception"] = float(fid.compute())
            fid.reset()  # the fakes only: reset_real_features=False keeps the real statistics
        return values
