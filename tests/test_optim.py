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


# -- optimizers beyond torch.optim's list (imgrec.optimizers) ---------------------------------------------------

def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def test_muon_steps_the_hidden_weights_as_torchs_muon_steps_their_flattened_matrices_and_adamw_the_rest():
    from imgrec.optimizers import MuonAdamW

    net = small_net().to(memory_format=torch.channels_last)  # as imgrec trains conv nets: filters not flat views
    optimizer = MuonAdamW(net.named_parameters(), lr=0.05, adamw_lr=0.01)
    muon_group, adamw_group = optimizer.param_groups
    assert [p.shape for p in muon_group["params"]] == [(4, 1, 3, 3), (16, 144)]  # conv filters, the hidden layer
    assert [p.shape for p in adamw_group["params"]] == [(4,), (16,), (3, 16), (3,)]  # biases and the classifier
    before = [p.detach().clone() for p in net.parameters()]
    net(torch.randn(8, 1, 8, 8)).square().mean().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    optimizer.step()
    for weight, grad, after in ((before[0], grads[0], net[0].weight), (before[2], grads[2], net[3].weight)):
        flat = torch.nn.Parameter(weight.reshape(len(weight), -1).clone())
        flat.grad = grad.reshape(len(grad), -1)
        reference = torch.optim.Muon([flat], lr=0.05, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
        reference.step()
        assert torch.allclose(after.reshape(len(after), -1), flat.detach(), atol=1e-6)
    adam = torch.nn.Parameter(before[5].clone())
    adam.grad = grads[5]
    torch.optim.AdamW([adam], lr=0.01, betas=(0.9, 0.95), weight_decay=0.0).step()
    assert torch.allclose(net[5].bias, adam.detach(), atol=1e-6)


def test_lion_is_the_papers_algorithm():
    from imgrec.optimizers import Lion

    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(5))
    optimizer = Lion([weight], lr=0.01, betas=(0.9, 0.99), weight_decay=0.1)
    w, m = weight.detach().clone().numpy(), torch.zeros(5).numpy()
    for _ in range(4):
        gradient = torch.randn(5)
        weight.grad = gradient.clone()
        optimizer.step()
        g = gradient.numpy()  # Chen et al. 2023, Algorithm 2
        update = (0.9 * m + 0.1 * g)
        w = w - 0.01 * ((update > 0) * 1.0 - (update < 0) * 1.0 + 0.1 * w)
        m = 0.99 * m + 0.01 * g
        assert torch.allclose(weight.detach(), torch.from_numpy(w).float(), atol=1e-6)


def test_sam_steps_with_the_gradient_at_the_worst_weights_rho_away():
    from imgrec.optimizers import SAM

    curvature = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = SAM([weight], base=partial(torch.optim.SGD), lr=0.1, weight_decay=0.0, rho=0.05)

    def closure():
        optimizer.zero_grad()
        loss = 0.5 * weight @ curvature @ weight
        loss.backward()
        return loss

    start = weight.detach().clone()
    optimizer.step(closure)
    gradient = curvature @ start
    worst = start + 0.05 * gradient / gradient.norm()
    assert torch.allclose(weight.detach(), start - 0.1 * (curvature @ worst), atol=1e-6)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    schedule.step()
    assert optimizer.base.param_groups[0]["lr"] == 0.05  # a schedule reaches the base optimizer


def test_muon_lion_and_sam_train_through_the_pipeline_with_a_schedule(make_cfg):
    import pytest
    from mlflow import MlflowClient

    from imgrec.train import train
    from tests.conftest import runs

    for name in ("muon", "lion", "sam"):
        cfg = make_cfg("data=digits", f"optimizer={name}", "scheduler=cosine", "model.channels=[8]", "model.fc=[16]",
                       "logger.log_model=false", f"logger.experiment_name={name}")
        metric = train(cfg)
        (run,) = runs(MlflowClient(cfg.logger.tracking_uri), name)
        assert run.info.status == "FINISHED" and metric is not None, name
        assert run.data.params["optimizer._target_"].endswith({"muon": "MuonAdamW", "lion": "Lion", "sam": "SAM"}[name])
    with pytest.raises(SystemExit, match="optimizer.rho must be > 0"):
        from tests.conftest import cli

        cli("train", *[f"paths.root={cfg.paths.root}", "data=digits", "optimizer=sam", "optimizer.rho=0"])
