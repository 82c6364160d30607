"""What a trained network costs, logged with its run: the callback behind a sweep's speed objective (sweep=edge_pareto)
and the edge table's columns."""

import copy
import logging

import lightning as L
from torch import nn

from imgrec import cost

log = logging.getLogger(__name__)
LATENCIES = ("eager", "onnx")


class CostReport(L.Callback):
    """After fitting (rank zero): `perf/params` and `perf/mflops` (one image, imgrec.cost) and, with `latency`, the
    median batch-1 latency `perf/latency_ms` of the network with its normalization, in eager PyTorch fp32 or under
    ONNX Runtime, on `threads` threads. The architecture fixes these, not the weights. A failed measurement is a
    warning: it never fails the run."""

    def __init__(self, latency: str | None = None, threads: int = 1, calls: int = 100):
        if latency is not None and latency not in LATENCIES:
            raise ValueError(f"callbacks.cost.latency: null, {' or '.join(LATENCIES)}, got {latency!r}")
        self.latency, self.threads, self.calls = latency, threads, calls

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        spec = getattr(pl_module, "net_spec", None)
        if not trainer.is_global_zero or spec is None or trainer.logger is None:
            return
        in_shape = tuple(spec["in_shape"])
        try:
            net = copy.deepcopy(pl_module.net).float().cpu().eval()
            metrics = {"perf/params": float(cost.parameters(net)), "perf/mflops": cost.mflops(net, in_shape)}
            if self.latency is not None:
                model = nn.Sequential(copy.deepcopy(pl_module.normalization).cpu(), net).eval()
                metrics["perf/latency_ms"] = measure_latency(model, in_shape, self.latency, self.threads, self.calls)
        except Exception as err:  # noqa: BLE001 - a cost is a report, never the run's result
            log.warning("the network's cost could not be measured: %s", err)
            return
        trainer.logger.log_metrics(metrics, step=trainer.global_step)


def measure_latency(model: nn.Module, in_shape, kind: str, threads: int, calls: int) -> float:
    import torch

    from imgrec.deploy.export import onnx_latency_ms

    if kind == "onnx":
        return onnx_latency_ms(model, in_shape, threads, calls)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return cost.net_latency_ms(model, in_shape, calls)
    finally:
        torch.set_num_threads(previous)
