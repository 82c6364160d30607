"""What every task shares: checkpoints that say how to rebuild their network."""

from typing import Any

import lightning as L

NET_SPEC_KEY = "imgrec_net"


class Task(L.LightningModule):
    """A LightningModule whose checkpoints carry `net_spec`: the model config and data shape.

    With it, `imgrec.tracking.checkpoints.load_net` rebuilds the trained network from the
    checkpoint alone (a file, an MLflow run, a registered model), e.g. for transfer learning.
    """

    net_spec: dict[str, Any] | None = None  # set by imgrec.train.build_task

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.net_spec is not None:
            checkpoint[NET_SPEC_KEY] = self.net_spec
