"""DCGAN: Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", ICLR 2016 (arXiv:1511.06434).

The paper's architecture guidelines, kept here:
- no pooling: the discriminator downsamples with strided convolutions, the generator upsamples
  with fractionally-strided (transposed) convolutions;
- batch norm in both networks, except the generator's output layer and the discriminator's
  input layer;
- ReLU in the generator with tanh on the output (images in [-1, 1]); LeakyReLU(0.2) in the
  discriminator, which returns logits (the loss applies the sigmoid);
- weights drawn from N(0, 0.02) (batch-norm scales from N(1, 0.02), shifts 0).

The networks are built for the exact image size: spatial sizes halve (rounding up) from the
image down to at most 4 pixels, e.g. 32 -> 16 -> 8 -> 4 and 28 -> 14 -> 7 -> 4. Each halving is
a stride-2 conv with kernel 4 (even size) or 3 (odd size), so the generator's transposed convs
retrace the same sizes exactly: no cropping or interpolation. `width` is the number of feature
maps next to the image; it doubles at each smaller size (64-128-256 for 28 and 32 pixels).

Class conditioning (`conditional=True`, a conditional GAN, Mirza & Osindero 2014): the generator
sees the one-hot label concatenated to its latent vector; the discriminator sees a learned
per-class image-sized map as one extra input channel.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

INIT_STD = 0.02  # the paper's N(0, 0.02) initialisation
LEAKY_SLOPE = 0.2  # the paper's LeakyReLU slope
SMALLEST_SIZE = 4  # the generator starts from (and the discriminator ends at) a map this size or smaller
NETWORK_KEYS = ("width",)  # what model.generator / model.discriminator accept


def spatial_sizes(size: int) -> list[int]:
    """Image size down to the smallest feature map, halving and rounding up: 28 -> [28, 14, 7, 4]."""
    sizes = [size]
    while sizes[-1] > SMALLEST_SIZE:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def _halving_kernel(size: int) -> int:
    """Kernel of the stride-2, padding-1 conv from `size` to ceil(size / 2) (and its transpose back)."""
    return 4 if size % 2 == 0 else 3


def _channels(width: int, stages: int) -> list[int]:
    """Feature maps per stage, image side first: width, 2*width, 4*width, ..."""
    return [width * 2**i for i in range(stages)]


def dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation; use with `net.apply(dcgan_init)`."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, INIT_STD)
        nn.init.zeros_(module.bias)


def _network_config(config: Mapping[str, Any] | None, key: str) -> int:
    config = dict(config or {})
    unknown = set(config) - set(NETWORK_KEYS)
    if unknown:
        raise ValueError(f"model.{key}: unknown keys {sorted(unknown)}; accepted: {', '.join(NETWORK_KEYS)}")
    width = config.get("width", 64)
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"model.{key}.width must be a positive integer, got {width!r}")
    return width


class Generator(nn.Module):
    """Latent vector (and label) -> image in [-1, 1]."""

    def __init__(
        self, out_shape: Sequence[int], latent_dim: int = 100, width: int = 64, num_classes: int = 0
    ):
        super().__init__()
        channels, height, _ = out_shape
        self.out_shape = tuple(out_shape)
        self.latent_dim, self.num_classes = latent_dim, num_classes  # num_classes > 0: conditional
        sizes = spatial_sizes(height)[::-1]  # smallest first: [4, 7, 14, 28]
        maps = _channels(width, len(sizes) - 1)[::-1]  # deepest first: [256, 128, 64]

        layers: list[nn.Module] = []
        in_channels = latent_dim + num_classes
        for size, out_channels in zip(sizes, maps):  # the first layer projects 1x1 -> sizes[0]
            if not layers:
                layers.append(nn.ConvTranspose2d(in_channels, out_channels, size, 1, 0, bias=False))
            else:
                layers.append(nn.ConvTranspose2d(in_channels, out_channels, _halving_kernel(size), 2, 1, bias=False))
            layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
            in_channels = out_channels
        if len(sizes) == 1:  # images no larger than the smallest map: one projection
            layers.append(nn.ConvTranspose2d(in_channels, channels, sizes[0], 1, 0))
        else:
            layers.append(nn.ConvTranspose2d(in_channels, channels, _halving_kernel(sizes[-1]), 2, 1))
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z: (N, latent_dim); labels: (N,) class indices, required when conditional."""
        z = z.flatten(1)
        if self.num_classes:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels")
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        return self.net(z[:, :, None, None])

    @torch.no_grad()
    def sample(
        self, n: int, labels: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """`n` images in [-1, 1] on this network's device. A conditional generator without `labels`
        draws the classes in turn (0, 1, ..., num_classes - 1, 0, ...)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        if self.num_classes and labels is None:
            labels = torch.arange(n, device=device) % self.num_classes
        return self(z, None if labels is None else labels.to(device))


class Discriminator(nn.Module):
    """Image (and label) -> one real-vs-fake logit per image."""

    def __init__(self, in_shape: Sequence[int], width: int = 64, num_classes: int = 0):
        super().__init__()
        channels, height, width_px = in_shape
        self.num_classes = num_classes
        # One learned image-sized map per class, stacked onto the image as an extra channel.
        self.label_maps = nn.Embedding(num_classes, height * width_px) if num_classes else None
        sizes = spatial_sizes(height)  # largest first: [28, 14, 7, 4]
        maps = _channels(width, len(sizes) - 1)

        layers: list[nn.Module] = []
        in_channels = channels + (1 if num_classes else 0)
        for i, (size, out_channels) in enumerate(zip(sizes, maps)):
            layers.append(nn.Conv2d(in_channels, out_channels, _halving_kernel(size), 2, 1, bias=i == 0))
            if i > 0:  # the paper: no batch norm on the discriminator's input layer
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
            in_channels = out_channels
        layers.append(nn.Conv2d(in_channels, 1, sizes[-1], 1, 0))  # smallest map -> 1x1 logit
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_maps is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: pass labels")
            maps = self.label_maps(labels).view(-1, 1, *images.shape[2:]).to(images.dtype)
            images = torch.cat([images, maps], dim=1)
        return self.net(images).flatten()


class DCGAN(nn.Module):
    """Holds the two networks; trained by imgrec.tasks.gan.GANTask. Calling it generates images."""

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        latent_dim: int = 100,
        generator: Mapping[str, Any] | None = None,
        discriminator: Mapping[str, Any] | None = None,
        conditional: bool = False,
    ):
        super().__init__()
        in_shape = tuple(int(s) for s in in_shape)
        if len(in_shape) != 3 or in_shape[1] != in_shape[2]:
            raise ValueError(f"model: DCGAN needs square images (C, H, H), got in_shape {list(in_shape)}")
        if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim < 1:
            raise ValueError(f"model.latent_dim must be a positive integer, got {latent_dim!r}")
        if not isinstance(conditional, bool):
            raise ValueError(f"model.conditional must be true or false, got {conditional!r}")
        self.in_shape, self.num_classes = in_shape, num_classes
        self.latent_dim, self.conditional = latent_dim, conditional
        label_count = num_classes if conditional else 0
        self.generator = Generator(in_shape, latent_dim, _network_config(generator, "generator"), label_count)
        self.discriminator = Discriminator(in_shape, _network_config(discriminator, "discriminator"), label_count)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels)
