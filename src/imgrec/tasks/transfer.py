"""Fine-tuning: the new head trains alone for `freeze_epochs`, then the backbone joins at `lr_scale` x lr."""

from imgrec.tasks import optim
from imgrec.tasks.classification import ClassificationTask


class TransferTask(ClassificationTask):
    """Classification of a net with `.backbone` and `.head` (imgrec.models.transfer.TransferNet)."""

    def __init__(self, *args, freeze_epochs: int = 1, lr_scale: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        if freeze_epochs < 0 or lr_scale < 0:
            raise ValueError(f"model.backbone: freeze_epochs and lr_scale must be >= 0, got {freeze_epochs}, {lr_scale}")
        self.freeze_epochs, self.lr_scale = freeze_epochs, lr_scale

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.freeze_epochs
        self.net.backbone.requires_grad_(not frozen)  # frozen parameters get no gradient, so no update

    def configure_optimizers(self):
        base_lr = self.optimizer.keywords["lr"]
        groups = [
            {"params": self.net.head.parameters()},
            {"params": self.net.backbone.parameters(), "lr": base_lr * self.lr_scale},
        ]
        # the schedule (if any) scales both groups from their own starting rates
        return optim.configure(groups, self.optimizer, self.scheduler, optim.run_length(self.trainer))
