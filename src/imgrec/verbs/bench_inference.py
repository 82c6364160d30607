"""`imgrec bench_inference model=<uri> [backends=[...]] [threads=2]`: how fast, how big and how accurate each way
of running a trained model is.

Backends: eager PyTorch in fp32 and with bf16 autocast (channels_last for conv nets), eager with the precision
`load_model(precision="auto")` chooses per batch size (bf16 from the batch size where it measured faster here,
imgrec.inference_precision; its fp32 and bf16 times per batch size are a table of their own), torch.compile of the
eager model, ONNX Runtime on the fp32 export and on the int8 (static, QDQ) export of imgrec.deploy.export.
For each: latency p50/p99 at batch 1, throughput at batch 256, the peak resident memory the backend adds
while it runs (Linux: VmHWM after resetting it), its file size, and its accuracy on the model's test set.
Threads are pinned (`threads`, torch and ONNX Runtime intra-op) and stated. Markdown, CSV and a PNG
(latency against accuracy) go to outputs/bench_inference/<run id>/ and to a child run of the model's run.
"""

import copy
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from imgrec import hardware
from imgrec.cost import latency_ms
from imgrec.deploy.export import agreement, eager, export_int8, export_onnx, logits_of, runner
from imgrec.errors import ConfigError
from imgrec.inference_precision import bf16_from_batch
from imgrec.jobs import ModelJob, Verb
from imgrec.report import Column, Figure, Report, Section, Table, figure, text_column

BACKENDS = ("eager fp32", "eager bf16 autocast", "eager auto", "torch.compile", "onnxruntime fp32", "onnxruntime int8")


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


def backends(job: ModelJob, scratch: Path,
             per_batch: dict) -> dict[str, tuple[Callable[[], Callable], Callable[[], float | None]]]:
    """name -> (build the runner, its file size in MB once built). "eager auto" leaves its per-batch-size timings in
    `per_batch`."""
    model, cfg = job.model, job.cfg
    fp32_file, int8_file = scratch / "model.onnx", scratch / "model.int8.onnx"
    checkpoint_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20

    def bf16():
        net = copy.deepcopy(model).to(memory_format=getattr(torch, hardware.auto_memory_format(model)))

        def run(x):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return net(torch.from_numpy(x)).float().numpy()
        return run

    def auto():
        net = copy.deepcopy(model)
        net.bf16_from, timings = bf16_from_batch(net, net.spec.in_shape)
        per_batch.update(bf16_from=net.bf16_from, timings=timings)
        return eager(net)

    def compiled():
        net = torch.compile(model)
        return eager(net)

    def ort_fp32():
        export_onnx(model, fp32_file)
        return runner("onnx", fp32_file, cfg.threads)

    def ort_int8():
        export_int8(model, int8_file, job.train_images(cfg.calibration_images))
        return runner("int8", int8_file, cfg.threads)

    def size(path: Path):
        return lambda: path.stat().st_size / 2**20

    return {"eager fp32": (lambda: eager(model), lambda: checkpoint_mb),
            "eager bf16 autocast": (bf16, lambda: checkpoint_mb),
            "eager auto": (auto, lambda: checkpoint_mb),
            "torch.compile": (compiled, lambda: checkpoint_mb),
            "onnxruntime fp32": (ort_fp32, size(fp32_file)),
            "onnxruntime int8": (ort_int8, size(int8_file))}


def measure(job: ModelJob, per_batch: dict) -> list[dict]:
    cfg = job.cfg
    torch.set_num_threads(cfg.threads)
    images, labels = (t.numpy() for t in job.test_split(cfg.test_images or None))
    one, batch = images[:1], images[: cfg.batch_size]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, (build, file_mb) in backends(job, Path(scratch), per_batch).items():
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
                         "test_acc": agreement(logits, logits, labels)["test_acc"], "setup_s": setup})
            print(f"{name}: p50 {p50:.3f} ms, {rate:,.0f} img/s, test acc {rows[-1]['test_acc']:.4f}", flush=True)
    return rows


def table(rows: list[dict]) -> Table:
    base = next((r for r in rows if r["backend"] == "eager fp32"), rows[0])
    for r in rows:
        r["speedup_p50"], r["delta_acc_pp"] = base["p50_ms"] / r["p50_ms"], 100 * (r["test_acc"] - base["test_acc"])
    columns = [text_column("backend", "backend"), Column("latency p50 (ms, batch 1)", "p50_ms", ".3f"),
               Column("p99", "p99_ms", ".3f"), Column("speed-up vs eager fp32 (p50)", "speedup_p50", lambda v: f"{v:.2f}x"),
               Column("throughput (img/s, batch 256)", "img_per_s", ",.0f"), Column("peak memory (MB)", "peak_mb", ".0f"),
               Column("file (MB)", "file_mb", ".2f"), Column("test acc", "test_acc", ".4f"),
               Column("Δ acc (pp)", "delta_acc_pp", "+.2f")]
    return Table("inference", columns, rows, caption="Inference of each backend")


def precision_table(per_batch: dict) -> Table:
    rows = [{"batch": batch, "fp32_ms": fp32, "bf16_ms": bf16, "ratio": bf16 / fp32,
             "chosen": "bf16" if per_batch["bf16_from"] is not None and batch >= per_batch["bf16_from"] else "fp32"}
            for batch, (fp32, bf16) in per_batch["timings"].items()]
    columns = [Column("batch", "batch"), Column("fp32 (ms, median)", "fp32_ms", ".3f"),
               Column("bf16 autocast (ms, median)", "bf16_ms", ".3f"), Column("bf16 / fp32", "ratio", ".2f"),
               text_column("eager auto runs", "chosen")]
    return Table("precision_per_batch", columns, rows, caption="What precision=auto measured, per batch size")


def latency_figure(rows: list[dict], title: str) -> Figure:
    def draw():
        fig, ax = figure(6.4, 4.4)
        for r in rows:
            ax.scatter(r["p50_ms"], 100 * r["test_acc"], s=50)
            ax.annotate(r["backend"], (r["p50_ms"], 100 * r["test_acc"]), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("latency at batch 1, p50 (ms, log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        return fig

    return Figure("inference.png", draw)


def check_backends(job: ModelJob) -> None:
    unknown = [b for b in job.cfg.backends if b not in BACKENDS]
    if unknown:
        raise ConfigError(f"backends: unknown {unknown}; choose from {', '.join(BACKENDS)}")


def run(job: ModelJob) -> Report:
    cfg, spec = job.cfg, job.model.spec
    title = f"Inference of {cfg.model} ({spec.model.get('_target_', '?').rsplit('.', 1)[-1]}, {spec.data})"
    notes = [f"{cfg.threads} threads (torch.set_num_threads and ONNX Runtime intra-op), {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}", f"latency: median and 99th percentile of {cfg.latency_calls} calls on one image "
             f"after 10 warm-up calls; throughput: {cfg.throughput_batches} batches of {cfg.batch_size}",
             "peak memory: the resident memory a backend added while it was built and run (VmHWM)",
             "test acc on the model's test set; torch.compile's and the exports' setup times are in the CSV (setup_s)"]
    per_batch: dict = {}
    rows = measure(job, per_batch)
    keys = {r["backend"]: r["backend"].replace(" ", "_").replace(".", "_") for r in rows}
    sections = [Section(table=table(rows), bullets=notes)]
    if per_batch.get("timings"):
        start = per_batch["bf16_from"]
        sections.append(Section(text="eager auto: " + (f"bf16 autocast from batch {start}, fp32 below"
                                                      if start is not None else "fp32 at every batch size") + ".",
                                table=precision_table(per_batch)))
    elif "eager auto" in cfg.backends:
        sections.append(Section(text="eager auto: fp32 (this CPU computes bf16 without native support: not timed)."))
    return Report(title, sections, figures=[latency_figure(rows, title)],
                  metrics={f"{keys[r['backend']]}/{m}": r[m] for r in rows for m in ("p50_ms", "test_acc")},
                  name="inference")


VERB = Verb("bench_inference", __doc__, run, check=check_backends, takes_model=True, choices={"backends": BACKENDS})
