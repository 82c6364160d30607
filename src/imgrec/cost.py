"""What a network costs to run: parameters, FLOPs per image and batch-1 latency.

FLOPs are counted by torch's own `torch.utils.flop_counter` (matmuls and convolutions, 2 FLOPs per
multiply-add, as torch counts them; papers that say "FLOPs" often mean multiply-adds, half of this).
"""

import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def mflops(net: nn.Module, in_shape: Sequence[int]) -> float:
    """Millions of FLOPs of one forward pass on one image of `in_shape` (C, H, W), in eval mode."""
    was_training = net.training
    net.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(1, *in_shape))
    finally:
        net.train(was_training)
    return counter.get_total_flops() / 1e6


def latency_ms(run: Callable, example, calls: int, warmup: int = 10) -> tuple[float, float]:
    """Median and 99th-percentile wall time of `run(example)` in milliseconds, after `warmup` calls."""
    for _ in range(warmup):
        run(example)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(example)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]


def net_latency_ms(net: nn.Module, in_shape: Sequence[int], calls: int = 100) -> float:
    """Median batch-1 latency of the eager fp32 network on the CPU, in eval mode (inference_mode)."""
    net = net.eval().cpu()
    image = torch.rand(1, *in_shape)

    def run(x):
        with torch.inference_mode():
            return net(x)

    return latency_ms(run, image, calls)[0]
