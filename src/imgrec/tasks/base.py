"""What every task shares: checkpoints that say how to rebuild their network."""

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

NET_SPEC_KEY = "imgrec_net"


class Task(L.LightningModule):
    """A LightningModule whose checkpoints carry `net_spec`: the model config and data shape.

    With it, `imgrec.tracking.checkpoints.load_net` rebuilds the trained network from the
    checkpoint alone (a file, an MLflow run, a registered model), e.g. for transfer learning.
    """

    net_spec: dict[str, Any] | None = None  # set by imgrec.train.build_task

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: dict[str, Any] | None,
        num_classes: int,
        class_names: Sequence[str] | None = None,
    ):
        """What imgrec.train.build_task gives every task: the network, the optimizer and LR schedule
        (conf/optimizer and conf/scheduler, built in configure_optimizers) and the data's classes."""
        super().__init__()
        self.net = net
        self.optimizer, self.scheduler = optimizer, scheduler
        self.num_classes = num_classes
        self.class_names = list(class_names or range(num_classes))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.net_spec is not None:
            checkpoint[NET_SPEC_KEY] = self.net_spec
