"""A trained network with a share of its channels removed (structured pruning, Torch-Pruning; Fang et al. 2023,
"DepGraph: towards any structural pruning"):

    python train.py model=pruned model.checkpoint=runs:/<run_id> model.amount=0.5     (what `imgrec compress` runs)

imgrec.train loads the trained network through imgrec.hub and hands it over (a net never sees a URI). Torch-Pruning
removes `amount` of the channels of every group of coupled layers (a conv, its batch norm and what reads its
output, residual branches together), those of the lowest L2 norm; the last linear layer keeps its outputs (the
classes). The net then trains on (fine-tuning) like any other.

The checkpoint's spec records the trained net's config (`base`) and every parameter's and buffer's shape
(`shapes`): imgrec.hub rebuilds the pruned net from them alone, the base net with each layer resized to its
recorded shape (no Torch-Pruning, no trained model needed), and loads its weights.
"""

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from imgrec import models
from imgrec.models.resnet import ZeroPadShortcut

PRUNABLE = (nn.Conv2d,)  # what a net needs at least one of to be pruned here
RESIZABLE = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


def prune(net: nn.Module, in_shape: Sequence[int], amount: float, round_to: int | None = None) -> nn.Module:
    """A pruned copy of `net`: `amount` of each layer group's channels removed by L2 magnitude, the channels kept
    rounded to a multiple of `round_to` where given."""
    import torch_pruning as tp

    if not 0 < amount < 1:
        raise ValueError(f"the share of channels to prune must be between 0 and 1, got {amount}")
    if round_to is not None and (not isinstance(round_to, int) or round_to < 1):
        raise ValueError(f"round_to: a positive number of channels, got {round_to!r}")
    if not any(isinstance(m, PRUNABLE) for m in net.modules()):
        raise ValueError(f"{type(net).__name__} has no convolution to prune (structured pruning removes conv channels)")
    if any(isinstance(m, ZeroPadShortcut) for m in net.modules()):  # its pad is sized by the unpruned channels
        raise ValueError(f"{type(net).__name__} has zero-padding (option A) shortcuts, whose channel counts are fixed: "
                         "structured pruning needs projection shortcuts (a 1x1 conv, as model=resnet18 has)")
    net = copy.deepcopy(net).eval()
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1:]
    pruner = tp.pruner.MetaPruner(net, torch.zeros(1, *in_shape), importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=amount, ignored_layers=last, round_to=round_to)
    pruner.step()
    return net


def shapes_of(net: nn.Module) -> dict[str, list[int]]:
    return {name: list(value.shape) for name, value in net.state_dict().items()}


def resize(net: nn.Module, shapes: Mapping[str, Sequence[int]]) -> nn.Module:
    """`net` with each conv, linear and batch-norm layer replaced by one of the recorded shapes (untrained)."""
    for name, module in list(net.named_modules()):
        if not isinstance(module, RESIZABLE) or f"{name}.weight" not in shapes:
            continue
        weight = shapes[f"{name}.weight"]
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels
            out_channels, in_per_group = weight[0], weight[1]
            groups = out_channels if depthwise else module.groups
            replaced = nn.Conv2d(in_per_group * groups, out_channels, module.kernel_size, module.stride,
                                 module.padding, module.dilation, groups, module.bias is not None, module.padding_mode)
        elif isinstance(module, nn.Linear):
            replaced = nn.Linear(weight[1], weight[0], module.bias is not None)
        else:
            replaced = type(module)(weight[0], module.eps, module.momentum, module.affine, module.track_running_stats)
        parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
        setattr(parent, name.rpartition(".")[2], replaced)
    return net


class PrunedNet(nn.Module):
    """The pruned network as `net`; built from a trained one (`checkpoint`: (net, NetSpec), handed over by
    imgrec.train) or rebuilt from a checkpoint's record (`base`: the trained net's config, `shapes`)."""

    def __init__(self, in_shape: Sequence[int], num_classes: int, checkpoint: Any = None, amount: float = 0.5,
                 round_to: int | None = None, base: Mapping[str, Any] | None = None,
                 shapes: Mapping[str, Sequence[int]] | None = None):
        super().__init__()
        if base is not None and shapes is not None:  # a rebuild: the checkpoint's weights replace these
            net = resize(models.build(base, in_shape, num_classes), shapes)
        elif isinstance(checkpoint, (tuple, list)):  # (net, its NetSpec), handed over by Hydra as [net, dict]
            trained, spec = checkpoint
            spec = spec if isinstance(spec, dict) else spec.to_dict()
            if tuple(spec["in_shape"]) != tuple(in_shape) or spec["num_classes"] != num_classes:
                raise ValueError(f"model.checkpoint: it takes {'x'.join(map(str, spec['in_shape']))} images into "
                                 f"{spec['num_classes']} classes; this data has {'x'.join(map(str, in_shape))} "
                                 f"images of {num_classes}")
            base, net = spec["model"], prune(trained, in_shape, amount, round_to)
        else:
            raise ValueError("model.checkpoint is required: the trained model to prune (runs:/<run_id>, a .ckpt path "
                             "or models:/<name>@<alias>)")
        self.net, self.base, self.amount, self.round_to = net, dict(base), amount, round_to

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def spec_config(self) -> dict[str, Any]:
        """What the checkpoint's spec records to rebuild this net (imgrec.train.build_task asks)."""
        return {"_target_": f"{__name__}.PrunedNet", "_partial_": True, "amount": self.amount,
                "round_to": self.round_to, "base": self.base,
                "shapes": {k.removeprefix("net."): v for k, v in shapes_of(self).items()}}
