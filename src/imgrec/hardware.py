"""What this machine computes fast: the choices `trainer.precision=auto` and `memory_format=auto` make.

- precision: bf16 autocast ("bf16-mixed") where the hardware computes bf16 natively: CPUs with AVX-512-BF16
  or AMX (a bf16 matmul ran 4.3x an fp32 one on this project's reference CPU), GPUs from Ampere on;
  fp16 autocast ("16-mixed") on older GPUs; fp32 ("32-true") everywhere else. Autocast keeps batch norm
  statistics, losses and metrics in fp32.
- memory format: channels_last for networks with convolutions (oneDNN and cuDNN run them faster in
  NHWC; the first conv converts its input), the default layout for the rest (MLPs, RNNs).
"""

import torch
from torch import nn


def cpu_has_native_bf16() -> bool:
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(probe() for probe in probes if probe is not None)


def uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def auto_precision(accelerator: str) -> str:
    if uses_gpu(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def auto_memory_format(net: nn.Module) -> str:
    convolutional = any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in net.modules())
    return "channels_last" if convolutional else "contiguous_format"
