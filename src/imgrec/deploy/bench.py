"""`python scripts/bench_inference.py model=<uri>`: how fast, how big and how accurate each way of running it is.

Backends: eager PyTorch in fp32 and with bf16 autocast (channels_last for conv nets), torch.compile of the
eager model, ONNX Runtime on the fp32 export and on the int8 (static, QDQ) export of imgrec.deploy.export.
For each: latency p50/p99 at batch 1, throughput at batch 256, the peak resident memory the backend adds
while it runs (Linux: VmHWM after resetting it), its file size, and its accuracy on the model's test set.
Threads are pinned (`threads`, torch and ONNX Runtime intra-op) and stated. Markdown, CSV and a PNG
(latency against accuracy) go to outputs/bench_inference/<run_id>/ and to a child run of the model's run.
"""

import copy
import csv
import io
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch

from imgrec import drivers, hardware
from imgrec.cost import latency_ms
from imgrec.deploy.export import (
    calibration_images,
    check,
    eager,
    export_int8,
    export_onnx,
    logits_of,
    runner,
    test_images,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = ("backend", "p50_ms", "p99_ms", "img_per_s", "peak_mb", "file_mb", "test_acc", "setup_s")


def memory_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        pass


def throughput(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, repeats: int) -> float:
    run(batch)
    start = time.perf_counter()
    for _ in range(repeats):
        run(batch)
    return repeats * len(batch) / (time.perf_counter() - start)


def backends(model, cfg, scratch: Path) -> dict[str, tuple[Callable[[], Callable], Callable[[], float | None]]]:
    """name -> (build the runner, its file size in MB once built)."""
    fp32_file, int8_file = scratch / "model.onnx", scratch / "model.int8.onnx"
    checkpoint_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20

    def bf16():
        net = copy.deepcopy(model).to(memory_format=getattr(torch, hardware.auto_memory_format(model)))

        def run(x):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return net(torch.from_numpy(x)).float().numpy()
        return run

    def compiled():
        net = torch.compile(model)
        return eager(net)

    def ort_fp32():
        export_onnx(model, fp32_file)
        return runner("onnx", fp32_file, cfg.threads)

    def ort_int8():
        export_int8(model, int8_file, calibration_images(model, cfg.data.root, cfg.calibration_images))
        return runner("int8", int8_file, cfg.threads)

    def size(path: Path):
        return lambda: path.stat().st_size / 2**20

    return {"eager fp32": (lambda: eager(model), lambda: checkpoint_mb),
            "eager bf16 autocast": (bf16, lambda: checkpoint_mb),
            "torch.compile": (compiled, lambda: checkpoint_mb),
            "onnxruntime fp32": (ort_fp32, size(fp32_file)),
            "onnxruntime int8": (ort_int8, size(int8_file))}


def measure(model, cfg) -> list[dict]:
    torch.set_num_threads(cfg.threads)
    images, labels = test_images(model, cfg.data.root)
    if cfg.test_images:
        images, labels = images[: cfg.test_images], labels[: cfg.test_images]
    one, batch = images[:1], images[: cfg.batch_size]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, (build, file_mb) in backends(model, cfg, Path(scratch)).items():
            if name not in cfg.backends:
                continue
            before = memory_mb("VmRSS")
            reset_peak()
            start = time.perf_counter()
            run = build()
            logits = logits_of(run, images)  # also warms compiled backends up
            setup = time.perf_counter() - start
            p50, p99 = latency_ms(run, one, cfg.latency_calls)
            rate = throughput(run, batch, cfg.throughput_batches)
            peak = memory_mb("VmHWM")
            rows.append({"backend": name, "p50_ms": p50, "p99_ms": p99, "img_per_s": rate,
                         "peak_mb": None if peak is None or before is None else peak - before, "file_mb": file_mb(),
                         "test_acc": check(logits, logits, labels)["test_acc"], "setup_s": setup})
            print(f"{name}: p50 {p50:.3f} ms, {rate:,.0f} img/s, test acc {rows[-1]['test_acc']:.4f}", flush=True)
    return rows


def markdown(rows: list[dict], title: str, notes: Sequence[str]) -> str:
    base = next((r for r in rows if r["backend"] == "eager fp32"), rows[0])
    header = ["backend", "latency p50 (ms, batch 1)", "p99", "speed-up vs eager fp32 (p50)", "throughput (img/s, batch 256)",
              "peak memory (MB)", "file (MB)", "test acc", "Δ acc (pp)"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        lines.append(f"| {r['backend']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {base['p50_ms'] / r['p50_ms']:.2f}x | "
                     f"{r['img_per_s']:,.0f} | {peak} | {r['file_mb']:.2f} | {r['test_acc']:.4f} | "
                     f"{100 * (r['test_acc'] - base['test_acc']):+.2f} |")
    return "\n".join([*lines, "", *(f"- {n}" for n in notes), ""])


def plot(rows: list[dict], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for r in rows:
        ax.scatter(r["p50_ms"], 100 * r["test_acc"], s=50)
        ax.annotate(r["backend"], (r["p50_ms"], 100 * r["test_acc"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency at batch 1, p50 (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(argv: Sequence[str]) -> None:
    cfg = drivers.compose("bench_inference", argv, plain_keys=("model",))
    job = drivers.ModelJob.open(cfg, "bench_inference")
    spec = job.model.spec
    title = f"Inference of {cfg.model} ({spec.model.get('_target_', '?').rsplit('.', 1)[-1]}, {spec.data})"
    notes = [f"{cfg.threads} threads (torch.set_num_threads and ONNX Runtime intra-op), {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}", f"latency: median and 99th percentile of {cfg.latency_calls} calls on one image "
             f"after 10 warm-up calls; throughput: {cfg.throughput_batches} batches of {cfg.batch_size}",
             "peak memory: the resident memory a backend added while it was built and run (VmHWM)",
             "test acc on the model's test set; torch.compile's and the exports' setup times are in the CSV (setup_s)"]
    tracked = job.child_run("bench_inference", {"model": cfg.model, "threads": cfg.threads})
    with tracked.running():
        rows = measure(job.model, cfg)
        job.out_dir.mkdir(parents=True, exist_ok=True)
        text = markdown(rows, title, notes)
        (job.out_dir / "inference.md").write_text(text)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        (job.out_dir / "inference.csv").write_text(buffer.getvalue())
        plot(rows, job.out_dir / "inference.png", title)
        keys = {r["backend"]: r["backend"].replace(" ", "_").replace(".", "_") for r in rows}
        tracked.log({f"{keys[r['backend']]}/{m}": r[m] for r in rows for m in ("p50_ms", "test_acc")},
                    [job.out_dir / name for name in ("inference.md", "inference.csv", "inference.png")])
    print(text)
    print(f"{job.out_dir} (MLflow run {tracked.run_id})")


def main(argv: Sequence[str] | None = None) -> None:
    drivers.main(run, argv, usage=__doc__.split("\n\n")[0], required="model")
