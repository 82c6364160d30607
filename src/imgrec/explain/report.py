"""What `imgrec explain metrics=true` concludes: the faithfulness table, its one-paragraph answer, Adebayo et al.'s
finding checked, and the sanity-check plot (as parts of an imgrec.report.Report)."""

from dataclasses import dataclass, field

import numpy as np

from imgrec.explain.metrics import SANITY_THRESHOLD
from imgrec.report import Column, Figure, Table, figure, text_column

# (key, column title): what metrics.csv and report.md hold per method
MEASURES = (("deletion_auc", "deletion AUC ↓"), ("insertion_auc", "insertion AUC ↑"), ("infidelity", "infidelity ↓"),
            ("sensitivity_max", "sensitivity-max ↓"), ("sanity_rho", "sanity: rank corr. after randomizing all layers ↓"))


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

    def row(self) -> dict:
        """The method's line of metrics.csv: each measure's mean and std over the images."""
        stats = {f"{key}_{stat}": float(f(self.values[key])) if key in self.values else None
                 for key, _ in MEASURES for stat, f in (("mean", np.mean), ("std", np.std))}
        return {"method": self.method, **stats, "passes_sanity": self.passes_sanity,
                "seconds_per_image": self.seconds_per_image}


def faithfulness_order(results: list[MethodResult]) -> list[MethodResult]:
    """Most faithful first: by insertion AUC minus deletion AUC (the probability the important pixels carry)."""
    return sorted(results, key=lambda r: r.mean("deletion_auc") - r.mean("insertion_auc"))


def table(results: list[MethodResult]) -> Table:
    def mean_std(key):
        return lambda row: None if row[f"{key}_mean"] is None else f"{row[f'{key}_mean']:.3f} ± {row[f'{key}_std']:.3f}"

    columns = [text_column("method", "method"), *(Column(title, mean_std(key)) for key, title in MEASURES),
               text_column("passes sanity", lambda row: "yes" if row["passes_sanity"] else "no"),
               Column("s / image", "seconds_per_image", ".4f")]
    return Table("metrics", columns, [r.row() for r in faithfulness_order(results)],
                 caption="Faithfulness of each attribution method")


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


def cascade_figure(results: list[MethodResult], title: str) -> Figure:
    def draw():
        fig, ax = figure(6.4, 4.2)
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
        return fig

    return Figure("sanity.png", draw)
