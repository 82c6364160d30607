"""Small building blocks shared by the model families."""

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"activation: unknown '{name}'; choose one of {', '.join(ACTIVATIONS)}") from None


def per_layer(value, n: int, key: str) -> list:
    """Broadcast a scalar setting to `n` layers, or check that a list has one entry per layer."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{key}: expected one value per conv layer ({n}), got {list(value)}")
        return list(value)
    return [value] * n
