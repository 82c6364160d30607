"""`python scripts/export.py model=<uri> format=onnx|pt2|int8 [output=...]` and `... register=NAME [alias=...]`.

Every format takes float [0, 1] images (N, C, H, W) with a dynamic batch dimension and returns logits: the
model of imgrec.hub.load_model, normalization inside.

- onnx: torch.onnx.export(dynamo=True) (onnxscript), run by ONNX Runtime;
- pt2: torch.export, loaded back with torch.export.load;
- int8: ONNX Runtime static quantization (QDQ, int8 weights per channel, uint8 activations) calibrated on
  training images. Chosen over PT2E quantization, measured on resnet20 (README, Deploy): PT2E now lives in
  torchao (one more dependency; torch 2.13 has no torch.ao.quantization.quantize_pt2e), its int8 model run
  eagerly is slower than fp32 (2.94 ms vs 1.76 ms at batch 1), and it is fast only once torch.compile lowers
  it, which failed here (torchao 0.18: an inductor stride assertion in the quantized conv). ONNX Runtime
  runs its int8 kernels as loaded: 0.11 ms.

Every export is checked against the eager model on the model's real test images (max abs logit
difference, top-1 agreement) and its test accuracy printed; file, check and accuracy go to MLflow as an
`export-<format>` child run of the model's run. `register=NAME` logs the model as an MLflow pyfunc model
(imgrec.deploy.pyfunc) in a `register` child run, registers it and sets `alias`.
"""

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from imgrec import drivers
from imgrec.data import catalog
from imgrec.errors import ConfigError
from imgrec.hub import test_split

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "int8": ".int8.onnx"}
Runner = Callable[[np.ndarray], np.ndarray]


def example_batch(in_shape: Sequence[int], n: int = 2) -> torch.Tensor:
    return torch.rand(n, *in_shape, generator=torch.Generator().manual_seed(0))


def batch_dim():
    return torch.export.Dim("batch", min=1, max=65536)


def export_onnx(model: torch.nn.Module, path: Path) -> None:
    program = torch.onnx.export(model, (example_batch(model.spec.in_shape),), dynamo=True, input_names=["pixels"],
                                output_names=["logits"], dynamic_shapes=({0: batch_dim()},), verbose=False)
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


def check(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How an export agrees with the eager model on the same images, and its accuracy."""
    return {"max_abs_logit_diff": float(np.abs(logits - reference).max()),
            "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "test_acc": float((logits.argmax(1) == labels).mean())}


def test_images(model, root: str | None) -> tuple[np.ndarray, np.ndarray]:
    """imgrec.hub.test_split as the arrays ONNX Runtime takes."""
    images, labels = test_split(model, root)
    return images.numpy(), labels.numpy()


def calibration_images(model, root: str | None, n: int) -> np.ndarray:
    """`n` training images (a fixed random sample; none of them a test image), in [0, 1]."""
    train = catalog.load_dataset(model.spec.data, root, download=False).train_images
    pick = np.random.default_rng(0).choice(len(train), size=min(n, len(train)), replace=False)
    return (train[np.sort(pick)].astype(np.float32) / 255)


def export(job: drivers.ModelJob, kind: str, output: Path) -> dict[str, float]:
    cfg, model = job.cfg, job.model
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if kind == "onnx":
        export_onnx(model, output)
    elif kind == "pt2":
        export_pt2(model, output)
    else:
        export_int8(model, output, calibration_images(model, cfg.data.root, cfg.calibration_images))
    seconds = time.perf_counter() - start
    images, labels = test_images(model, cfg.data.root)
    reference = logits_of(eager(model), images)
    result = check(reference, logits_of(runner(kind, output, cfg.threads), images), labels)
    result |= {"eager_test_acc": check(reference, reference, labels)["test_acc"], "export_s": seconds,
               "file_mb": output.stat().st_size / 2**20, "test_images": len(labels)}
    return result


def show(kind: str, output: Path, result: dict[str, float]) -> None:
    table = Table(title=f"{kind} export: {output}")
    table.add_column("check")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    Console().print(table)


def run(argv: Sequence[str]) -> None:
    cfg = drivers.compose("export", argv, plain_keys=("model",))
    if cfg.register is None and cfg.format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    job = drivers.ModelJob.open(cfg, "export")
    if cfg.register is not None:
        from imgrec.deploy.pyfunc import register

        register(job, str(cfg.register), cfg.alias)
        return
    output = Path(cfg.output) if cfg.output else job.out_dir / f"model{FORMATS[cfg.format]}"
    tracked = job.child_run(f"export-{cfg.format}", {"format": cfg.format, "model": cfg.model, "output": str(output)})
    with tracked.running():
        result = export(job, cfg.format, output)
        tracked.log(result, [output])
    show(cfg.format, output, result)
    print(f"{output} (MLflow run {tracked.run_id})")


def main(argv: Sequence[str] | None = None) -> None:
    drivers.main(run, argv, usage=__doc__.split("\n\n")[0], required="model")
