"""A trained model as a file that runs without imgrec: ONNX, torch.export (pt2), int8 ONNX; runners for each, and
the check of an export against the eager model (`imgrec export`, `imgrec bench_inference`).

Every format takes float [0, 1] images (N, C, H, W) with a dynamic batch dimension and returns logits: the
model of imgrec.hub.load_model, normalization inside.

- onnx: torch.onnx.export(dynamo=True) (onnxscript), run by ONNX Runtime;
- pt2: torch.export, loaded back with torch.export.load;
- int8: ONNX Runtime static quantization (QDQ, int8 weights per channel, uint8 activations) calibrated on
  training images. Chosen over PT2E quantization, measured on resnet20 (docs/RESULTS.md, Deploy): PT2E now lives
  in torchao (one more dependency; torch 2.13 has no torch.ao.quantization.quantize_pt2e), its int8 model run
  eagerly is slower than fp32 (2.94 ms vs 1.76 ms at batch 1), and it is fast only once torch.compile lowers
  it, which failed here (torchao 0.18: an inductor stride assertion in the quantized conv). ONNX Runtime
  runs its int8 kernels as loaded: 0.11 ms.
"""

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "int8": ".int8.onnx"}
Runner = Callable[[np.ndarray], np.ndarray]


def example_batch(in_shape: Sequence[int], n: int = 2) -> torch.Tensor:
    return torch.rand(n, *in_shape, generator=torch.Generator().manual_seed(0))


def batch_dim():
    return torch.export.Dim("batch", min=1, max=65536)


def export_onnx(model: torch.nn.Module, path: Path, in_shape: Sequence[int] | None = None) -> None:
    """`in_shape`: the images' (C, H, W), for a model without imgrec.hub's `spec`."""
    example = example_batch(in_shape or model.spec.in_shape)
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=["pixels"], output_names=["logits"],
                                dynamic_shapes=({0: batch_dim()},), verbose=False)
    program.save(str(path))


def export_pt2(model: torch.nn.Module, path: Path) -> None:
    program = torch.export.export(model, (example_batch(model.spec.in_shape),), dynamic_shapes=({0: batch_dim()},))
    torch.export.save(program, str(path))


class Calibration:
    """ONNX Runtime's CalibrationDataReader over [0, 1] training images, in batches."""

    def __init__(self, images: np.ndarray, batch_size: int = 64):
        self.batches = iter([images[i : i + batch_size] for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {"pixels": batch}


def export_int8(model: torch.nn.Module, path: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        fp32, prepared = Path(scratch) / "fp32.onnx", Path(scratch) / "prepared.onnx"
        export_onnx(model, fp32)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(path), Calibration(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)


def runner(kind: str, path: Path, threads: int) -> Runner:
    """A function from [0, 1] float32 images to logits, for an exported file."""
    if kind == "pt2":
        module = torch.export.load(str(path)).module()
        return lambda x: module(torch.from_numpy(x)).detach().numpy()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"pixels": x})[0]


def logits_of(run: Runner, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    return np.concatenate([run(np.ascontiguousarray(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])


def eager(model: torch.nn.Module) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).float().numpy()

    return run


def agreement(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How an export agrees with the eager model on the same images, and its accuracy."""
    return {"max_abs_logit_diff": float(np.abs(logits - reference).max()),
            "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "test_acc": float((logits.argmax(1) == labels).mean())}


def onnx_profile(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, folder: Path,
                 calibration: np.ndarray | None = None, threads: int = 1, calls: int = 200) -> dict[str, float]:
    """The model exported to ONNX (int8, calibrated on `calibration` images, when they are given) into `folder` and
    measured under ONNX Runtime on `threads` threads: its accuracy on [0, 1] `images`, its median batch-1
    latency in ms and its file size in MB."""
    from imgrec.cost import latency_ms

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("model.int8.onnx" if calibration is not None else "model.onnx")
    if calibration is not None:
        export_int8(model, path, calibration)
    else:
        export_onnx(model, path)
    run = runner("onnx", path, threads)
    accuracy = float((logits_of(run, images).argmax(1) == labels).mean())
    return {"onnx_acc": accuracy, "onnx_latency_ms": latency_ms(run, images[:1], calls)[0],
            "onnx_mb": path.stat().st_size / 2**20}


def onnx_latency_ms(model: torch.nn.Module, in_shape: Sequence[int], threads: int = 1, calls: int = 100) -> float:
    """The median batch-1 latency of the model exported to ONNX and run by ONNX Runtime on `threads` threads."""
    from imgrec.cost import latency_ms

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        export_onnx(model, path, in_shape)
        run = runner("onnx", path, threads)
        return latency_ms(run, example_batch(in_shape, 1).numpy(), calls)[0]
