"""`imgrec explain model=<uri> [methods=[...]] [n=16 | indices=[...]] [target=pred|label] [metrics=true]`: why
the model decided what it did, and which explanation can be trusted.

Explains the model's decisions on the first `n` test images of its own dataset (or `indices`), for the predicted
class (or the true label), with each attribution method of imgrec.explain.methods. Writes outputs/explain/<run id>/
and an `explain` child run of the model's run:
- attributions.npz: `indices`, `labels`, `preds`, and one (n, C, H, W) array per method;
- grid.png: a row per image (the first `grid_images`), the input then each method's heat map;
- with metrics=true: metrics.csv and report.md (the faithfulness table, a one-paragraph answer and Adebayo et
  al.'s finding checked) and sanity.png (rank correlation down the randomization cascade), from
  imgrec.explain.metrics.
"""

import time

import numpy as np
import torch
from rich.console import Console
from rich.progress import track

from imgrec import pictures
from imgrec.errors import ConfigError
from imgrec.explain import metrics
from imgrec.explain.methods import METHODS, attribute, check_methods, last_conv
from imgrec.explain.report import MethodResult, adebayo, answer, cascade_figure, table
from imgrec.jobs import ModelJob, Verb
from imgrec.report import Figure, Report, Section


def chosen_images(cfg, count: int) -> np.ndarray:
    if cfg.indices is not None:
        indices = np.asarray(list(cfg.indices), dtype=np.int64)
        bad = indices[(indices < 0) | (indices >= count)]
        if len(bad):
            raise ConfigError(f"indices: {bad.tolist()} out of range for a test set of {count} images")
        return indices
    if not isinstance(cfg.n, int) or cfg.n < 1:
        raise ConfigError(f"n must be a positive integer, got {cfg.n!r}")
    return np.arange(min(cfg.n, count))


def default_methods(model) -> list[str]:
    return [m for m in METHODS if m != "gradcam" or last_conv(model) is not None]


def evaluate(name: str, model, images, targets, attributions, cfg) -> MethodResult:
    """The faithfulness measures of one method's attributions (imgrec.explain.metrics)."""
    ev, method = cfg.evaluation, METHODS[name]
    result = MethodResult(name, 0.0)
    result.values["deletion_auc"], result.values["insertion_auc"] = metrics.deletion_insertion(
        model, images, targets, attributions, ev.steps)
    result.values["infidelity"] = metrics.infidelity_of(model, images, targets, attributions, ev.infidelity_samples)
    few = slice(0, ev.subset)  # sensitivity and the sanity cascade re-run the method many times: a subset
    result.values["sensitivity_max"] = metrics.sensitivity_of(method, model, images[few], targets[few],
                                                              ev.sensitivity_samples)
    cascade = metrics.sanity(method, model, images[few], targets[few], attributions[few], ev.sanity_points)
    result.values["sanity_rho"] = cascade[-1][2]
    result.cascade = [(layer, depth, float(np.mean(rho))) for layer, depth, rho in cascade]
    return result


def notes(cfg, model, indices, images, preds, labels) -> list[str]:
    ev, subset = cfg.evaluation, min(cfg.evaluation.subset, len(images))
    return [f"{len(images)} test images of {model.spec.data} (indices {indices[0]}..{indices[-1]}), explained for the "
            f"{'predicted' if cfg.target == 'pred' else 'true'} class; model accuracy on them "
            f"{float((preds == labels).float().mean()):.3f}",
            f"deletion / insertion: {ev.steps} steps of 1/{ev.steps} of the pixels, removed to black or inserted "
            "into a Gaussian blur (sigma 2); AUC of the class probability",
            f"infidelity: {ev.infidelity_samples} Gaussian perturbations (std 0.03), normalized; sensitivity-max: "
            f"{ev.sensitivity_samples} perturbations within 0.02, on the first {subset} images",
            f"sanity: Spearman rank correlation of |attributions| with the originals after re-initializing the "
            f"layers from the output down ({ev.sanity_points} points of the cascade, first {subset} images); "
            f"passes below {metrics.SANITY_THRESHOLD}",
            f"s / image: the attribution alone, batches of {cfg.batch_size}"]


def methods_of(job: ModelJob) -> list[str]:
    return check_methods(job.cfg.methods, job.model) if job.cfg.methods is not None else default_methods(job.model)


def check(job: ModelJob) -> None:
    if job.cfg.target not in ("pred", "label"):
        raise ConfigError(f"target must be pred or label, got {job.cfg.target!r}")
    methods_of(job)
    chosen_images(job.cfg, len(job.test_split()[1]))


def run(job: ModelJob) -> Report:
    cfg, model = job.cfg, job.model
    names = methods_of(job)
    test_images, test_labels = job.test_split()
    indices = chosen_images(cfg, len(test_images))
    images, labels = test_images[indices], test_labels[indices]
    with torch.no_grad():
        preds = model(images).argmax(dim=1)
    targets = preds if cfg.target == "pred" else labels
    torch.manual_seed(cfg.seed)

    console = Console(stderr=True)
    attributions, seconds = {}, {}
    for name in track(names, description="explaining", console=console, disable=not console.is_terminal):
        start = time.perf_counter()
        attributions[name] = attribute(METHODS[name], model, images, targets, cfg.batch_size)
        seconds[name] = (time.perf_counter() - start) / len(images)
        print(f"{name}: {seconds[name] * 1000:.1f} ms per image", flush=True)

    job.out_dir.mkdir(parents=True, exist_ok=True)
    arrays = job.out_dir / "attributions.npz"
    np.savez_compressed(arrays, indices=indices, labels=labels.numpy(), preds=preds.numpy(),
                        **{name: a.numpy() for name, a in attributions.items()})
    classes, shown = model.class_names, slice(0, cfg.grid_images)
    row_labels = [f"#{i} {classes[p]}" + ("" if p == y else f"\n(is {classes[y]})")
                  for i, p, y in zip(indices[shown].tolist(), preds[shown].tolist(), labels[shown].tolist())]
    target = "predicted" if cfg.target == "pred" else "true"
    grid = Figure("grid.png", lambda: pictures.attributions_figure(
        images[shown], {k: v[shown] for k, v in attributions.items()}, row_labels,
        f"{cfg.model}: attributions for the {target} class"))
    title = f"Which explanation of {cfg.model} can be trusted"
    if not cfg.metrics:
        return Report(title, [Section(text=f"{len(names)} methods ({', '.join(names)}) on {len(images)} test images; "
                                           "faithfulness not measured (metrics=true measures it).")],
                      figures=[grid], attachments=[arrays])

    results = []
    for name in track(names, description="measuring faithfulness", console=console, disable=not console.is_terminal):
        result = evaluate(name, model, images, targets, attributions[name], cfg)
        result.seconds_per_image = seconds[name]
        results.append(result)
        print(f"{name}: deletion {result.mean('deletion_auc'):.3f}, insertion {result.mean('insertion_auc'):.3f}, "
              f"sanity rho {result.mean('sanity_rho'):.2f}", flush=True)
    return Report(title, [Section(text=[answer(results), adebayo(results)], table=table(results),
                                  bullets=notes(cfg, model, indices, images, preds, labels))],
                  figures=[grid, cascade_figure(
                      results, f"Cascading randomization (Adebayo et al. 2018)\n{cfg.model}")],
                  metrics={f"{r.method}/{key}": r.mean(key) for r in results for key in r.values}, attachments=[arrays])


VERB = Verb("explain", __doc__, run, check=check, takes_model=True,
            choices={"methods": list(METHODS), "target": ("pred", "label")})
