"""Inference precision chosen by measurement, per batch size.

bf16 autocast pays off on large batches of a CPU with native bf16 (AMX, AVX-512-BF16), but its casts cost more
than they save on a single image (issue 26: the cnn at batch 1 took 0.224 ms in bf16, 0.179 ms in fp32). So
"auto" does not guess: it times both on the model itself, here, and uses bf16 from the smallest batch size at
which bf16 was faster (and stayed faster at every larger size tried).
"""

import time
from collections.abc import Sequence

import torch
from torch import nn

from imgrec import hardware
from imgrec.errors import ConfigError

PRECISIONS = ("32-true", "bf16-mixed", "auto")
BATCH_SIZES = (1, 8, 64, 256)  # what `auto` times


def check(precision: str) -> str:
    """`precision`, or a ConfigError naming the key and the choices."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: unknown {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def median_ms(model: nn.Module, images: torch.Tensor, bf16: bool, repeats: int) -> float:
    """The median time of `model(images)` on its own bf16 path (bf16_from=1) or in fp32 (bf16_from=None)."""
    kept, model.bf16_from = model.bf16_from, 1 if bf16 else None
    try:
        with torch.no_grad():
            for _ in range(3):  # warm-up: first calls pick kernels and allocate
                model(images)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(images)
                times.append(time.perf_counter() - start)
    finally:
        model.bf16_from = kept
    return 1e3 * sorted(times)[len(times) // 2]


def bf16_from_batch(model: nn.Module, in_shape: Sequence[int], batch_sizes: Sequence[int] = BATCH_SIZES,
                    repeats: int = 15) -> tuple[int | None, dict[int, tuple[float, float]]]:
    """(the smallest batch size from which bf16 measured faster than fp32, or None; {batch: (fp32 ms, bf16 ms)}) for
    `model`, an imgrec.hub.PixelModel (its `bf16_from` says which path a batch takes). None without timing on a CPU
    with no native bf16 (there it is emulated, and slower)."""
    if not hardware.cpu_has_native_bf16():
        return None, {}
    timings = {}
    for batch in sorted(batch_sizes):
        images = torch.rand(batch, *in_shape)
        timings[batch] = (median_ms(model, images, False, repeats), median_ms(model, images, True, repeats))
    start = None  # the smallest size from which every larger one tried was faster in bf16 too
    for batch in sorted(timings, reverse=True):
        fp32, bf16 = timings[batch]
        if bf16 >= fp32:
            break
        start = batch
    return start, timings
