"""Few-shot evaluation of a trained network's features: n-way k-shot episodes classified by the nearest class
prototype (Snell et al. 2017, "Prototypical networks for few-shot learning", used here at test time only).

An episode draws `ways` classes, `shots` labeled support images and `queries` query images of each; a class's
prototype is the mean feature of its support images, and each query goes to the nearest prototype (squared
Euclidean distance as in Snell et al., or cosine). An episode's accuracy is its share of right queries; the
result is their mean over episodes with a 95% interval, as few-shot papers report it.
"""

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from imgrec.models.transfer import InputAdapter, split_off_head

DISTANCES = ("euclidean", "cosine")


def backbone(model: nn.Module, in_shape: Sequence[int]) -> nn.Module:
    """An imgrec.hub.PixelModel's features for [0, 1] images of `in_shape`: the images adapted to the shape it was
    trained on (grayscale <-> RGB, resized), normalized as in its training, through its net up to the last linear
    layer (as transfer learning cuts it), flattened. The model itself is left whole."""
    body, _ = split_off_head(copy.deepcopy(model.net))
    return nn.Sequential(InputAdapter(in_shape, model.spec.in_shape), model.normalization, body, nn.Flatten()).eval()


@torch.inference_mode()
def embed(features: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Features (N, D) of uint8 or [0, 1] images (N, C, H, W), batch by batch."""
    parts = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        parts.append(features(batch.float() / 255 if batch.dtype == torch.uint8 else batch).float())
    return torch.cat(parts)


def episode_accuracies(features: torch.Tensor, labels: torch.Tensor, ways: int, shots: int, queries: int,
                       episodes: int, distance: str = "euclidean", seed: int = 0) -> torch.Tensor:
    """The accuracy of each of `episodes` nearest-prototype episodes, drawn from `seed`: (episodes,)."""
    if distance == "cosine":
        features = F.normalize(features, dim=1)
    generator = torch.Generator().manual_seed(seed)
    classes = labels.unique()
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    accuracies = torch.empty(episodes)
    for episode in range(episodes):
        chosen = torch.randperm(len(classes), generator=generator)[:ways]
        picks = torch.stack([members[c][torch.randperm(len(members[c]), generator=generator)[: shots + queries]]
                             for c in chosen.tolist()])  # (ways, shots + queries)
        support, query = features[picks[:, :shots]], features[picks[:, shots:]].flatten(0, 1)
        prototypes = support.mean(dim=1)  # (ways, D)
        if distance == "cosine":
            predicted = (query @ F.normalize(prototypes, dim=1).T).argmax(dim=1)
        else:
            predicted = torch.cdist(query, prototypes).argmin(dim=1)
        truth = torch.arange(ways).repeat_interleave(queries)
        accuracies[episode] = (predicted == truth).float().mean()
    return accuracies
