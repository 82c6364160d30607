"""The faithfulness table, its one-paragraph answer and the sanity-check plot of `explain.py metrics=true`."""

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np

from imgrec.explain.metrics import SANITY_THRESHOLD

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# (key, column title, better): what metrics.csv and report.md hold per method
MEASURES = (("deletion_auc", "deletion AUC ↓", "lower"), ("insertion_auc", "insertion AUC ↑", "higher"),
            ("infidelity", "infidelity ↓", "lower"), ("sensitivity_max", "sensitivity-max ↓", "lower"),
            ("sanity_rho", "sanity: rank corr. after randomizing all layers ↓", "lower"))


@dataclass
class MethodResult:
    method: str
    seconds_per_image: float
    values: dict[str, np.ndarray] = field(default_factory=dict)  # measure -> one value per image
    cascade: list[tuple[str, int, float]] = field(default_factory=list)  # (layer, layers randomized, mean rho)

    def mean(self, key: str) -> float:
        return float(np.mean(self.values[key])) if key in self.values else float("nan")

    @property
    def passes_sanity(self) -> bool:
        return abs(self.mean("sanity_rho")) < SANITY_THRESHOLD


def to_csv(results: list[MethodResult]) -> str:
    buffer = io.StringIO()
    columns = ["method", *(f"{k}_{s}" for k, _, _ in MEASURES for s in ("mean", "std")), "passes_sanity",
               "seconds_per_image"]
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for r in results:
        cells = [f"{f(r.values[k]):.6g}" if k in r.values else "" for k, _, _ in MEASURES for f in (np.mean, np.std)]
        writer.writerow([r.method, *cells, r.passes_sanity, f"{r.seconds_per_image:.6g}"])
    return buffer.getvalue()


def faithfulness_order(results: list[MethodResult]) -> list[MethodResult]:
    """Most faithful first: by insertion AUC minus deletion AUC (the probability the important pixels carry)."""
    return sorted(results, key=lambda r: r.mean("deletion_auc") - r.mean("insertion_auc"))


def answer(results: list[MethodResult]) -> str:
    ranked = faithfulness_order(results)
    best = ranked[0]
    baseline = next((r for r in results if r.method == "random"), None)
    text = (f"**{best.method}** is the most faithful explanation of this model: removing the pixels it ranks first "
            f"drops the class probability fastest (deletion AUC {best.mean('deletion_auc'):.3f}) and inserting them "
            f"restores it fastest (insertion AUC {best.mean('insertion_auc'):.3f}); then "
            + ", ".join(f"{r.method} ({r.mean('insertion_auc') - r.mean('deletion_auc'):+.3f})" for r in ranked[1:4])
            + " (insertion minus deletion). ")
    if baseline is not None:
        losers = [r.method for r in results if r is not baseline and not (
            r.mean("deletion_auc") < baseline.mean("deletion_auc") and r.mean("insertion_auc") > baseline.mean("insertion_auc"))]
        text += ("Every method beats the random baseline on both deletion and insertion. " if not losers else
                 f"Not every method beats the random baseline: {', '.join(losers)} does not on deletion and insertion "
                 "together. ")
    failing = [r.method for r in results if "sanity_rho" in r.values and r.method != "random" and not r.passes_sanity]
    text += (f"Sanity check: {', '.join(failing)} hardly change when the weights are randomized (rank correlation "
             f">= {SANITY_THRESHOLD} after the whole cascade): they show the image more than the model."
             if failing else "Every method changes when the weights are randomized (sanity check passed).")
    return text


def adebayo(results: list[MethodResult]) -> str:
    """Adebayo et al. 2018: gradients and Grad-CAM pass the randomization test, guided backprop fails it."""
    by_name = {r.method: r for r in results if "sanity_rho" in r.values}
    needed = [m for m in ("saliency", "gradcam", "guided_backprop") if m not in by_name]
    if needed:
        return f"Adebayo et al.'s finding was not tested: run with {', '.join(needed)} among the methods."
    rho = {m: by_name[m].mean("sanity_rho") for m in ("saliency", "gradcam", "guided_backprop")}
    held = by_name["saliency"].passes_sanity and by_name["gradcam"].passes_sanity and not by_name["guided_backprop"].passes_sanity
    figures = ", ".join(f"{m} {v:.2f}" for m, v in rho.items())
    order = ("guided backprop stays closer to its original than both" if rho["guided_backprop"] > max(
        rho["saliency"], rho["gradcam"]) else "guided backprop does not stay closer to its original than both")
    return (f"Adebayo et al. (2018) found that gradients and Grad-CAM pass the cascading randomization test while "
            f"guided backprop fails it. Here (mean rank correlation after randomizing every layer: {figures}; "
            f"threshold {SANITY_THRESHOLD}) the finding **{'held' if held else 'did not hold'}**; {order}. After "
            f"only the output layer is randomized: "
            + ", ".join(f"{m} {by_name[m].cascade[0][2]:.2f}" for m in rho if by_name[m].cascade) + ".")


def markdown(results: list[MethodResult], title: str, notes: list[str]) -> str:
    header = ["method", *(t for _, t, _ in MEASURES), "passes sanity", "s / image"]
    lines = [f"# {title}", "", answer(results), "", adebayo(results), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in faithfulness_order(results):
        cells = [f"{np.mean(r.values[k]):.3f} ± {np.std(r.values[k]):.3f}" if k in r.values else "-" for k, _, _ in MEASURES]
        lines.append(f"| {r.method} | " + " | ".join(cells) + f" | {'yes' if r.passes_sanity else 'no'} | "
                     f"{r.seconds_per_image:.4f} |")
    return "\n".join([*lines, "", *(f"- {n}" for n in notes), ""])


def plot_cascade(results: list[MethodResult], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in results:
        if r.cascade:
            ax.plot([d for _, d, _ in r.cascade], [rho for _, _, rho in r.cascade], marker="o", label=r.method)
    ax.axhline(SANITY_THRESHOLD, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("layers randomized, from the output down")
    ax.set_ylabel("rank correlation with the original attributions")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
