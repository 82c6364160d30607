"""Optimizers beyond torch.optim's list, for conf/optimizer: Muon with AdamW beside it, Lion, and SAM around any
optimizer. Each is a torch.optim.Optimizer (its param groups carry `lr`: every scheduler of conf/scheduler drives
them) and takes the task's named parameters.

- `MuonAdamW` (optimizer=muon): PyTorch's own Muon update (torch.optim.Muon's functional: Nesterov momentum, the
  Newton-Schulz orthogonalization, its learning-rate adjustment) on the hidden weights, conv filters flattened to
  (out, in x kh x kw) as airbench does; AdamW on everything else (biases, norms, embeddings, the classifier's
  weights): Jordan et al. 2024's split. torch.optim.Muon itself refuses parameters that are not 2-D, hence the views.
- `Lion` (optimizer=lion): Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms": the sign of an
  interpolation of momentum and gradient, decoupled weight decay. No kept package installs cleanly here without
  pulling more than its 20 lines; the test restates the paper's Algorithm 2.
- `SAM` (optimizer=sam): Foret et al. 2021, "Sharpness-Aware Minimization": two forward-backward passes a step
  (Lightning hands the optimizer its closure), the base optimizer (any of conf/optimizer's) steps with the gradient
  taken at the worst nearby weights, rho away.
"""

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

NOT_MUON = ("embed", "token", "pos_")  # names of parameters that are tables, not linear maps: AdamW's


def named(params: Iterable) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) pairs from named parameters, or from plain ones (named by position)."""
    items = list(params)
    if items and isinstance(items[0], dict):
        raise ValueError("param groups are not supported here: pass the model's (named) parameters")
    return [item if isinstance(item, tuple) else (str(i), item) for i, item in enumerate(items)]



def loss_of(closure: Callable | None):
    """The loss `closure` recomputes (with gradients), as torch's optimizers evaluate it in step(); None without one."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()

class MuonAdamW(Optimizer):
    def __init__(self, params: Iterable, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = 5, adjust_lr_fn: str | None = "match_rms_adamw",
                 adamw_lr: float = 3e-3, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_weight_decay: float = 0.0):
        """Muon on the weights with 2 or more dimensions but the last (the classifier) and tables (NOT_MUON);
        AdamW on the rest at `adamw_lr`. A schedule scales both groups from their own starting rates."""
        params = [(name, p) for name, p in named(params) if p.requires_grad]
        matrices = [i for i, (name, p) in enumerate(params) if p.ndim >= 2 and not any(w in name for w in NOT_MUON)]
        matrices = matrices[:-1]  # the last weight matrix is the classifier's
        muon = [params[i][1] for i in matrices]
        chosen = set(matrices)
        others = [p for i, (_, p) in enumerate(params) if i not in chosen]
        muon_defaults = torch.optim.Muon([torch.zeros(1, 1)], lr=lr).defaults  # PyTorch's own, and its checks
        groups = [{"params": muon, "use_muon": True, **muon_defaults, "lr": lr, "momentum": momentum,
                   "nesterov": nesterov, "weight_decay": weight_decay, "ns_steps": ns_steps,
                   "adjust_lr_fn": adjust_lr_fn},
                  {"params": others, "use_muon": False, "lr": adamw_lr, "betas": tuple(adamw_betas), "eps": 1e-8,
                   "weight_decay": adamw_weight_decay}]
        # `momentum` among the defaults: OneCycleLR cycles it (Muon's), as it does SGD's
        super().__init__([g for g in groups if g["params"]], {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        from torch.optim._muon import muon

        loss = loss_of(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["use_muon"]:
                # airbench's flattening of conv filters: (out, in x kh x kw); a channels_last filter is not a view
                # of that, so it is updated as a copy and written back
                flat = [p.reshape(len(p), -1) for p in params]
                buffers = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(v)) for p, v in zip(params, flat)]
                muon(flat, [p.grad.reshape(len(p), -1) for p in params], buffers, lr=group["lr"],
                     weight_decay=group["weight_decay"], momentum=group["momentum"], nesterov=group["nesterov"],
                     ns_coefficients=group["ns_coefficients"], eps=group["eps"], ns_steps=group["ns_steps"],
                     adjust_lr_fn=group["adjust_lr_fn"], has_complex=False)
                for p, v in zip(params, flat):
                    if v.data_ptr() != p.data_ptr():
                        p.copy_(v.view(p.shape))
            else:
                self._adamw(group, params)
        return loss

    def _adamw(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """AdamW's update (Loshchilov & Hutter 2019), bias-corrected."""
        beta1, beta2 = group["betas"]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"], state["exp_avg"], state["exp_avg_sq"] = 0, torch.zeros_like(p), torch.zeros_like(p)
            state["step"] += 1
            p.mul_(1 - group["lr"] * group["weight_decay"])
            state["exp_avg"].lerp_(p.grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            correction1, correction2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
            denominator = (state["exp_avg_sq"] / correction2).sqrt_().add_(group["eps"])
            p.addcdiv_(state["exp_avg"], denominator, value=-group["lr"] / correction1)


class Lion(Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        """Lion's defaults: a learning rate 3-10x below AdamW's and a weight decay 3-10x above it (the paper)."""
        if lr <= 0 or not all(0 <= b < 1 for b in betas) or weight_decay < 0:
            raise ValueError(f"optimizer: lion takes lr > 0, betas in [0, 1) and weight_decay >= 0, got {lr}, "
                             f"{list(betas)}, {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = loss_of(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                momentum = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(momentum.lerp(p.grad, 1 - beta1).sign_(), alpha=-group["lr"])
                momentum.lerp_(p.grad, 1 - beta2)
        return loss


class SAM(Optimizer):
    def __init__(self, params: Iterable, base: Callable[..., Optimizer], lr: float = 0.05, weight_decay: float = 5e-4,
                 rho: float = 0.05, adaptive: bool = False):
        """`base`: the optimizer that steps (conf/optimizer's, a partial: sgd by default); `rho`: the radius of the
        neighbourhood; `adaptive`: ASAM's scale-invariant neighbourhood (Kwon et al. 2021)."""
        if rho <= 0:
            raise ValueError(f"optimizer.rho must be > 0, got {rho}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "rho": rho, "adaptive": adaptive})
        self.base = base(params=self.param_groups, lr=lr, weight_decay=weight_decay)
        self.param_groups = self.base.param_groups  # one set of groups: a schedule's lr reaches the base
        self.defaults.update(self.base.defaults)

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        if closure is None:
            raise RuntimeError("optimizer=sam takes two passes a step: it needs the closure (Lightning gives it)")
        with torch.enable_grad():
            loss = closure()  # the gradient at the weights
        with_grad = [(group, p) for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not with_grad:
            return loss
        norm = torch.norm(torch.stack([((p.abs() if group["adaptive"] else 1) * p.grad).norm(2)
                                       for group, p in with_grad]), 2)
        moved = []
        for group, p in with_grad:
            step = (p.abs() ** 2 if group["adaptive"] else 1) * p.grad * (group["rho"] / (norm + 1e-12))
            p.add_(step)  # to the worst nearby weights
            moved.append((p, step))
        with torch.enable_grad():
            closure()  # the gradient there
        for p, step in moved:
            p.sub_(step)  # back
        self.base.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)
