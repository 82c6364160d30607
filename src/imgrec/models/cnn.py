"""A configurable convolutional classifier: the knobs a kernel-size/stride sweep turns.

conv blocks: [conv -> batch norm -> activation -> pool -> dropout] x len(channels)
head:        flatten -> [linear -> activation -> dropout] x len(fc) -> linear(num_classes)

The Keras MNIST and TensorFlow CIFAR-10 tutorial nets are configs of this module
(conf/model/keras_cnn.yaml, conf/model/tf_cnn.yaml).
"""

from collections.abc import Sequence

import torch
from torch import nn

from imgrec.models.layers import activation as make_activation
from imgrec.models.layers import per_layer


def _padding(padding: str | int, kernel_size: int) -> int:
    if padding == "same":
        return kernel_size // 2  # keeps the size at stride 1 for odd kernels
    if padding == "valid":
        return 0
    if isinstance(padding, int) and padding >= 0:
        return padding
    raise ValueError(f"padding: expected 'same', 'valid' or an int >= 0, got {padding!r}")


class ConvNet(nn.Module):
    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[str | int] = "same",
        pool: bool | Sequence[bool] = True,
        pool_type: str = "max",
        batch_norm: bool = True,
        dropout: float = 0.0,
        fc: Sequence[int] = (128,),
        fc_dropout: float = 0.0,
        activation: str = "relu",
    ):
        super().__init__()
        n = len(channels)
        kernels = per_layer(kernel_size, n, "kernel_size")
        strides = per_layer(stride, n, "stride")
        paddings = per_layer(padding, n, "padding")
        pools = per_layer(pool, n, "pool")
        if pool_type not in ("max", "avg"):
            raise ValueError(f"pool_type: expected 'max' or 'avg', got {pool_type!r}")
        pool_layer = nn.MaxPool2d if pool_type == "max" else nn.AvgPool2d

        blocks: list[nn.Module] = []
        in_channels = in_shape[0]
        for out_channels, k, s, p, pooled in zip(channels, kernels, strides, paddings, pools):
            blocks.append(nn.Conv2d(in_channels, out_channels, k, s, _padding(p, k), bias=not batch_norm))
            if batch_norm:
                blocks.append(nn.BatchNorm2d(out_channels))
            blocks.append(make_activation(activation))
            if pooled:
                blocks.append(pool_layer(2))
            if dropout:
                blocks.append(nn.Dropout(dropout))
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)

        head: list[nn.Module] = [nn.Flatten()]
        width = self._feature_size(in_shape, channels, kernels, strides, pools)
        for hidden in fc:
            head += [nn.Linear(width, hidden), make_activation(activation)]
            if fc_dropout:
                head.append(nn.Dropout(fc_dropout))
            width = hidden
        head.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*head)

    def _feature_size(self, in_shape, channels, kernels, strides, pools) -> int:
        """Flattened size of the conv features, found by pushing one blank image through them."""
        self.features.eval()  # so batch norm statistics are not touched
        try:
            with torch.no_grad():
                size = self.features(torch.zeros(1, *in_shape)).numel()
        except RuntimeError as err:
            raise ValueError(
                f"the conv stack (channels={list(channels)}, kernel_size={kernels}, stride={strides}, "
                f"pool={pools}) shrinks a {'x'.join(map(str, in_shape))} input to nothing: {err}"
            ) from None
        finally:
            self.features.train()
        if size == 0:
            raise ValueError(f"the conv stack shrinks a {'x'.join(map(str, in_shape))} input to nothing")
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
