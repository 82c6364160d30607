"""The airbench network (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv 2404.00498):
the fastest published path to 94% on CIFAR-10, rebuilt for any image shape.

whiten:  a frozen 2x2 conv whose filters whiten the training images' 2x2 patches (`fit_to_data`), then GELU
groups:  [conv 3x3 -> max-pool 2 -> batch norm -> GELU -> conv 3x3 -> batch norm -> GELU] x len(widths)
head:    global max-pool -> linear (no bias) -> x scaling (1/9)

Batch norms learn only their biases (the scale stays 1), with momentum 0.4 in PyTorch's sense (airbench's 0.6);
convolutions start as identities on their first channels (Dirac), so a deep stack starts close to the whitened
image. The training recipe around it (Nesterov SGD, label smoothing 0.2, flips, 2-pixel translations, an average of
the weights, test-time flips and translations) is conf/experiment/cifar10_94.yaml.
"""

from collections.abc import Sequence

import torch
from torch import nn


class Conv(nn.Conv2d):
    def __init__(self, channels_in: int, channels_out: int, kernel_size: int = 3, padding: int | str = "same",
                 bias: bool = False):
        super().__init__(channels_in, channels_out, kernel_size, padding=padding, bias=bias)
        with torch.no_grad():
            nn.init.dirac_(self.weight[: min(channels_in, channels_out)])


class BatchNorm(nn.BatchNorm2d):
    """Batch norm with a learned bias and a fixed scale of 1."""

    def __init__(self, channels: int, momentum: float):
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, momentum: float):
        super().__init__()
        self.conv1, self.pool, self.norm1 = Conv(channels_in, channels_out), nn.MaxPool2d(2), BatchNorm(channels_out, momentum)
        self.conv2, self.norm2, self.activation = Conv(channels_out, channels_out), BatchNorm(channels_out, momentum), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    def __init__(self, in_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (64, 256, 256),
                 whiten_kernel: int = 2, batchnorm_momentum: float = 0.4, scaling: float = 1 / 9):
        super().__init__()
        channels, height, width = in_shape
        if min(height, width) - whiten_kernel + 1 < 2 ** len(widths):
            raise ValueError(f"model.widths: {len(widths)} groups halve the image {len(widths)} times; "
                             f"{height}x{width} images allow at most {(min(height, width) - whiten_kernel + 1).bit_length() - 1}")
        whiten_width = 2 * channels * whiten_kernel**2  # each whitening filter and its negative
        self.whiten = nn.Conv2d(channels, whiten_width, whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # set from the data (fit_to_data), never trained
        nn.init.zeros_(self.whiten.bias)
        groups, previous = [], whiten_width
        for group_width in widths:
            groups.append(ConvGroup(previous, group_width, batchnorm_momentum))
            previous = group_width
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(previous, num_classes, bias=False)
        self.scaling = scaling
        self.activation = nn.GELU()

    @torch.no_grad()
    def fit_to_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Whitening filters from normalized training images (N, C, H, W): the eigenvectors of their patches'
        covariance, each scaled by 1/sqrt(eigenvalue + eps), and their negatives."""
        c, (h, w) = images.shape[1], self.whiten.kernel_size
        patches = images.float().unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).flip(0).reshape(-1, c, h, w)
        self.whiten.weight.copy_(torch.cat((filters, -filters)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.activation(self.whiten(x)))
        x = torch.amax(x, dim=(2, 3))  # global max-pool: airbench's MaxPool2d(3) on its 3x3 maps, at any size
        return self.head(x) * self.scaling
