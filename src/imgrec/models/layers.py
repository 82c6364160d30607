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


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth"), as timm's DropPath: while
    training, a residual branch is dropped for a whole sample with probability `p`, the kept ones scaled by
    1 / (1 - p), so that evaluation, which keeps every branch, sees the same expected sum."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, branch):
        if not self.training or self.p == 0:
            return branch
        keep = branch.new_empty((branch.shape[0],) + (1,) * (branch.ndim - 1)).bernoulli_(1 - self.p)
        return branch * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


def drop_path_rates(p: float, blocks: int) -> list[float]:
    """The paper's linear rule: 0 for the first block, rising linearly to `p` for the last (timm's linspace)."""
    if not 0 <= p < 1:
        raise ValueError(f"model.drop_path must be in [0, 1), got {p!r}")
    return [p * i / max(1, blocks - 1) for i in range(blocks)]
