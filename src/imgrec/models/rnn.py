"""Recurrent classifiers that read an image row by row (Graves-style "sequential MNIST" by rows).

Each of the H rows is one time step of C*W values: 28 steps of 28 for MNIST, 32 steps of 96 for
CIFAR. The last step's hidden state (both directions' when bidirectional) feeds a linear layer.
"""

from collections.abc import Sequence

import torch
from torch import nn

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RowRNN(nn.Module):
    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        cell: str = "lstm",
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell: unknown '{cell}'; choose one of {', '.join(CELLS)}")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be >= 1, got {hidden_size} and {num_layers}")
        channels, _, width = in_shape
        self.rnn = CELLS[cell](
            input_size=channels * width,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,  # torch applies it between layers only
        )
        self.classifier = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, c, h, w = images.shape
        rows = images.permute(0, 2, 1, 3).reshape(n, h, c * w)  # (N, steps=H, features=C*W)
        outputs, _ = self.rnn(rows)
        if self.rnn.bidirectional:  # forward direction's last step, backward direction's first step
            half = self.rnn.hidden_size
            last = torch.cat([outputs[:, -1, :half], outputs[:, 0, half:]], dim=1)
        else:
            last = outputs[:, -1]
        return self.classifier(last)
