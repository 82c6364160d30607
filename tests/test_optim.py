from functools import partial

import torch

from imgrec.tasks.optim import configure


def params():
    return [torch.nn.Parameter(torch.zeros(3))]


def test_no_schedule_returns_the_optimizer_alone():
    out = configure(params(), partial(torch.optim.SGD, lr=0.1), {"schedule": None}, lambda interval: 10)
    assert set(out) == {"optimizer"} and out["optimizer"].param_groups[0]["lr"] == 0.1


def test_a_null_length_is_filled_with_the_run_length_of_its_interval():
    cosine = partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=None)
    out = configure(params(), partial(torch.optim.SGD, lr=0.1), {"schedule": cosine, "interval": "step"},
                    lambda interval: {"step": 1234, "epoch": 5}[interval])
    assert out["lr_scheduler"]["scheduler"].T_max == 1234
    assert out["lr_scheduler"]["interval"] == "step"


def test_onecycle_gets_total_steps_and_plateau_gets_its_monitor():
    onecycle = partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=None)
    out = configure(params(), partial(torch.optim.SGD, lr=0.1), {"schedule": onecycle, "interval": "step"},
                    lambda interval: 77)
    assert out["lr_scheduler"]["scheduler"].total_steps == 77
    plateau = partial(torch.optim.lr_scheduler.ReduceLROnPlateau)
    out = configure(params(), partial(torch.optim.SGD, lr=0.1),
                    {"schedule": plateau, "interval": "epoch", "monitor": "val/loss"}, lambda interval: 3)
    assert out["lr_scheduler"]["monitor"] == "val/loss"


def test_an_explicit_length_is_kept():
    cosine = partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=9)
    out = configure(params(), partial(torch.optim.SGD, lr=0.1), {"schedule": cosine, "interval": "epoch"},
                    lambda interval: 100)
    assert out["lr_scheduler"]["scheduler"].T_max == 9
