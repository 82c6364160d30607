"""A callback that kills its own process with SIGKILL at a chosen point of a run, as a crash or the OOM
killer would: nothing in the process gets to clean up. The point comes from the environment
(IMGREC_TEST_KILL_AT), so the killed command and the command that resumes it compose the same config
(`+callbacks.killer._target_=tests.killer.KillAt`) and share its config hash."""

import os
import signal

import lightning as L

POINTS = ("data", "mid_epoch", "after_checkpoint", "test")


class KillAt(L.Callback):
    def __init__(self):
        self.point = os.environ.get("IMGREC_TEST_KILL_AT")

    def _kill(self, point: str) -> None:
        if self.point == point:
            os.kill(os.getpid(), signal.SIGKILL)

    def setup(self, trainer, pl_module, stage: str) -> None:  # the data just read and placed, the run RUNNING
        if stage == "fit":
            self._kill("data")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 1 and batch_idx == 1:  # epoch 0's checkpoint is written
            self._kill("mid_epoch")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:  # ModelCheckpoint saved epoch 0 as it ended
            self._kill("after_checkpoint")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._kill("test")
