"""A tiny learnable problem whose answer is known: the class is decided by one image region only."""

import torch

from imgrec.hub import PixelModel
from imgrec.models.cnn import ConvNet
from imgrec.models.spec import NetSpec

SHAPE = (1, 12, 12)


def pixel_model(net, in_shape=SHAPE, classes=2) -> PixelModel:
    channels = in_shape[0]
    spec = NetSpec(model={}, in_shape=tuple(in_shape), num_classes=classes, data="synthetic", mean=(0.5,) * channels,
                   std=(0.25,) * channels)
    return PixelModel(net, spec).eval().requires_grad_(False)


def region_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """12 x 12 noise; class 1 when the top-left 4 x 4 corner is bright. Nothing else tells the classes apart."""
    images = torch.rand(n, *SHAPE, generator=generator) * 0.5
    labels = torch.randint(0, 2, (n,), generator=generator)
    images[labels == 1, :, :4, :4] += 0.5
    return images, labels


def train_region_model(steps: int = 150, loss_of=None, seed: int = 0) -> PixelModel:
    """A small CNN trained on region_data; `loss_of(model, images, labels)` replaces cross-entropy (e.g. an
    adversarial training loss)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = pixel_model(ConvNet(SHAPE, 2, channels=(8, 16), fc=(16,)))
    model.train().requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        images, labels = region_data(64, generator)
        loss = loss_of(model, images, labels) if loss_of else torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)
