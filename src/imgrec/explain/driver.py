"""`python scripts/explain.py model=<uri> [methods=[...]] [n=16 | indices=[...]] [target=pred|label] [metrics=true]`.

Explains the model's decisions on the first `n` test images of its own dataset (or `indices`), for the
predicted class (or the true label), with each attribution method of imgrec.explain.methods. Writes to
outputs/explain/<run id>/ and logs to an `explain` child run of the model's run:
- attributions.npz: `indices`, `labels`, `preds`, and one (n, C, H, W) array per method;
- grid.png: a row per image (the first `grid_images`), the input then each method's heat map;
- with metrics=true: metrics.csv, report.md (the faithfulness table and a one-paragraph answer) and
  sanity.png (rank correlation down the randomization cascade), from imgrec.explain.metrics.
"""

import time
from collections.abc import Sequence

import numpy as np
import torch
from rich.console import Console
from rich.progress import track

from imgrec import drivers, hub
from imgrec.errors import ConfigError
from imgrec.explain import metrics
from imgrec.explain.methods import METHODS, attribute, check_methods, last_conv
from imgrec.explain.report import MethodResult, markdown, plot_cascade, to_csv
from imgrec.pictures import save_attributions


def chosen_images(cfg, images: torch.Tensor) -> np.ndarray:
    if cfg.indices is not None:
        indices = np.asarray(list(cfg.indices), dtype=np.int64)
        bad = indices[(indices < 0) | (indices >= len(images))]
        if len(bad):
            raise ConfigError(f"indices: {bad.tolist()} out of range for a test set of {len(images)} images")
        return indices
    if not isinstance(cfg.n, int) or cfg.n < 1:
        raise ConfigError(f"n must be a positive integer, got {cfg.n!r}")
    return np.arange(min(cfg.n, len(images)))


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


def run(argv: Sequence[str]) -> None:
    cfg = drivers.compose("explain", argv, plain_keys=("model",))
    if cfg.target not in ("pred", "label"):
        raise ConfigError(f"target must be pred or label, got {cfg.target!r}")
    job = drivers.ModelJob.open(cfg, "explain")
    model = job.model
    names = check_methods(cfg.methods, model) if cfg.methods is not None else default_methods(model)
    test_images, test_labels = hub.test_split(model, cfg.data.root)
    indices = chosen_images(cfg, test_images)
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

    out = job.out_dir
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "attributions.npz", indices=indices, labels=labels.numpy(), preds=preds.numpy(),
                        **{name: a.numpy() for name, a in attributions.items()})
    classes = model.class_names
    shown = slice(0, cfg.grid_images)
    row_labels = [f"#{i} {classes[p]}" + ("" if p == y else f"\n(is {classes[y]})")
                  for i, p, y in zip(indices[shown].tolist(), preds[shown].tolist(), labels[shown].tolist())]
    title = f"{cfg.model}: attributions for the {'predicted' if cfg.target == 'pred' else 'true'} class"
    save_attributions(images[shown], {k: v[shown] for k, v in attributions.items()}, row_labels, out / "grid.png", title)
    files = ["attributions.npz", "grid.png"]

    results = []
    if cfg.metrics:
        for name in track(names, description="measuring faithfulness", console=console, disable=not console.is_terminal):
            result = evaluate(name, model, images, targets, attributions[name], cfg)
            result.seconds_per_image = seconds[name]
            results.append(result)
            print(f"{name}: deletion {result.mean('deletion_auc'):.3f}, insertion {result.mean('insertion_auc'):.3f}, "
                  f"sanity rho {result.mean('sanity_rho'):.2f}", flush=True)
        ev = cfg.evaluation
        notes = [f"{len(images)} test images of {model.spec.data} (indices {indices[0]}..{indices[-1]}), explained for the "
                 f"{'predicted' if cfg.target == 'pred' else 'true'} class; model accuracy on them "
                 f"{float((preds == labels).float().mean()):.3f}",
                 f"deletion / insertion: {ev.steps} steps of 1/{ev.steps} of the pixels, removed to black or inserted "
                 "into a Gaussian blur (sigma 2); AUC of the class probability",
                 f"infidelity: {ev.infidelity_samples} Gaussian perturbations (std 0.03), normalized; sensitivity-max: "
                 f"{ev.sensitivity_samples} perturbations within 0.02, on the first {min(ev.subset, len(images))} images",
                 f"sanity: Spearman rank correlation of |attributions| with the originals after re-initializing the "
                 f"layers from the output down ({ev.sanity_points} points of the cascade, first {min(ev.subset, len(images))} "
                 f"images); passes below {metrics.SANITY_THRESHOLD}",
                 "s / image: the attribution alone, batches of " + str(cfg.batch_size)]
        (out / "metrics.csv").write_text(to_csv(results))
        text = markdown(results, f"Which explanation of {cfg.model} can be trusted", notes)
        (out / "report.md").write_text(text)
        plot_cascade(results, out / "sanity.png", f"Cascading randomization (Adebayo et al. 2018)\n{cfg.model}")
        files += ["metrics.csv", "report.md", "sanity.png"]

    tracked = job.child_run("explain", {"model": cfg.model, "methods": ",".join(names), "n": len(images),
                                        "target": cfg.target, "metrics": bool(cfg.metrics)})
    with tracked.running():
        tracked.log({f"{r.method}/{key}": r.mean(key) for r in results for key in r.values}, [out / n for n in files])
    if results:
        print(text)
    else:
        print(f"{len(names)} methods on {len(images)} images")
    print(f"{out} (MLflow run {tracked.run_id})")


def main(argv: Sequence[str] | None = None) -> None:
    drivers.main(run, argv, usage=__doc__.split("\n\n")[0], required="model")
