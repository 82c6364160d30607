"""GAN augmentation: extra training samples from a trained class-conditional generator.

    data.synthetic.generator=runs:/<run_id>   (or a .ckpt path, or models:/<name>@<alias>)
    data.synthetic.fraction=0.5               (0.5 x batch size generated images per batch)

imgrec.train loads the generator's network through imgrec.hub and hands it here. Generated images
carry the labels they were generated for, drawn uniformly over the classes.
"""

from collections.abc import Sequence

import torch
from torch import nn

from imgrec.errors import ConfigError


class SyntheticSamples:
    def __init__(self, gan: nn.Module, gan_shape: Sequence[int], gan_classes: int, fraction: float, source: str):
        """`gan`: a trained imgrec.models.dcgan.DCGAN; `source`: where it came from (for messages)."""
        if not 0.0 < fraction:
            raise ConfigError(f"data.synthetic.fraction must be > 0 when a generator is set, got {fraction}")
        if not getattr(gan, "conditional", False):
            raise ConfigError(f"data.synthetic.generator: {source} is not a class-conditional generator "
                              "(train one with model=dcgan model.conditional=true)")
        self.generator = gan.generator.eval().requires_grad_(False)
        self.shape, self.num_classes = tuple(gan_shape), gan_classes
        self.fraction, self.source = fraction, source

    def check(self, in_shape: Sequence[int], num_classes: int) -> None:
        """The generator must make this data's images and classes."""
        if self.shape != tuple(in_shape) or self.num_classes != num_classes:
            raise ConfigError(f"data.synthetic.generator: {self.source} makes {self.num_classes} classes of "
                              f"{list(self.shape)} images; this data has {num_classes} classes of {list(in_shape)}")

    def sample(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(images in [0, 1], labels) for round(fraction * batch_size) generated samples."""
        self.generator.to(device)
        n = max(1, round(self.fraction * batch_size))
        labels = torch.randint(0, self.num_classes, (n,), device=device)
        images = self.generator.sample(n, labels)
        return (images + 1) / 2, labels
