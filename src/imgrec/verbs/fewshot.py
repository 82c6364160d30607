"""`imgrec fewshot model=<uri> [data.classes=[5,6,7,8,9]] [ways=5] [shots=[1,5,10]] [episodes=600] [queries=15]
[data=<name>] [distance=euclidean|cosine] [allow_seen=false]`: how well the model's features tell apart classes it
never saw, from a few examples of each.

Embeds the test images of `data.classes` (of the model's own dataset, or of data=<name>: images of another shape
are adapted to the model's, as transfer learning adapts them) with the model's backbone, the net up to its last
linear layer, and classifies `episodes` n-way k-shot episodes per shot count by the nearest class prototype
(imgrec.fewshot: Snell et al. 2017). Without data.classes: every class of the model's dataset it was not trained
on. Classes the model was trained on are refused unless allow_seen=true. Writes outputs/fewshot/<run id>/ and a
`fewshot` child run of the model's run (metrics `fewshot/<ways>way_<shots>shot_acc`): report.md, results.csv
(ways, shots, queries, episodes, acc, std, ci_low, ci_high, distance, classes) and accuracy.png (accuracy against
shots with the 95% intervals).
"""

import torch

from imgrec import fewshot, stats
from imgrec.data.splits import select_classes
from imgrec.errors import ConfigError
from imgrec.jobs import ModelJob, Verb
from imgrec.report import Column, Figure, Report, Section, Table, figure

COLUMNS = [Column("ways", "ways"), Column("shots", "shots"), Column("queries", "queries"),
           Column("episodes", "episodes"), Column("accuracy", "acc", ".4f"),
           Column("95% CI", lambda r: f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]")]


def positive_ints(key: str, value) -> list[int]:
    values = [value] if isinstance(value, int) else list(value)
    if not values or not all(isinstance(v, int) and v > 0 for v in values):
        raise ConfigError(f"{key} must be a positive integer or a list of them, got {value!r}")
    return values


def chosen_classes(job: ModelJob) -> list[int]:
    """data.classes, checked: distinct classes of the dataset, none the model was trained on unless allowed."""
    cfg, names = job.cfg, job.datamodule(classes=False).class_names
    seen = set() if job.other_data else set(job.model.class_names)
    given = cfg.data.get("classes")
    classes = [i for i, name in enumerate(names) if name not in seen] if given is None else list(given)
    if not all(isinstance(c, int) and 0 <= c < len(names) for c in classes) or len(set(classes)) != len(classes):
        raise ConfigError(f"data.classes must be distinct class indices of {job.dataset} in 0..{len(names) - 1}, "
                          f"got {classes}")
    if given is None and not classes:
        raise ConfigError(f"the model was trained on every class of {job.dataset}: name classes with "
                          "data.classes=[...] and allow_seen=true, or evaluate on another dataset (data=<name>)")
    known = [f"{names[c]} ({c})" for c in classes if names[c] in seen]
    if known and not cfg.allow_seen:
        raise ConfigError(f"data.classes: the model was trained on {', '.join(known)}; few-shot evaluation asks about "
                          "classes it never saw: choose others, or pass allow_seen=true")
    ways = positive_ints("ways", cfg.ways)
    if len(ways) != 1 or not 2 <= ways[0] <= len(classes):
        raise ConfigError(f"ways must be one integer from 2 to the {len(classes)} classes of data.classes, "
                          f"got {cfg.ways!r}")
    return classes


def check(job: ModelJob) -> None:
    chosen_classes(job)
    positive_ints("shots", job.cfg.shots)
    positive_ints("queries", job.cfg.queries)
    positive_ints("episodes", job.cfg.episodes)
    if job.cfg.distance not in fewshot.DISTANCES:
        raise ConfigError(f"distance must be one of {', '.join(fewshot.DISTANCES)}, got {job.cfg.distance!r}")


def accuracy_figure(rows: list[dict], title: str) -> Figure:
    def draw():
        fig, ax = figure(5.5, 4.0)
        shots, acc = [r["shots"] for r in rows], [100 * r["acc"] for r in rows]
        errors = [[100 * (r["acc"] - r["ci_low"]) for r in rows], [100 * (r["ci_high"] - r["acc"]) for r in rows]]
        ax.errorbar(shots, acc, yerr=errors, marker="o", capsize=4, label=f"{rows[0]['ways']}-way, 95% CI")
        ax.axhline(100 / rows[0]["ways"], color="0.6", linestyle=":", label="chance")
        ax.set_xscale("log")
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.set_xlabel("shots (labeled examples per class)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
        return fig

    return Figure("accuracy.png", draw)


def run(job: ModelJob) -> Report:
    cfg, model = job.cfg, job.model
    data = job.datamodule(classes=False)
    classes, names = chosen_classes(job), data.class_names
    test = select_classes(data.splits.test, classes, len(names))
    images, labels = data.eval_pixels(test.gather()), test.labels
    smallest = int(torch.bincount(labels).min())
    if max(positive_ints("shots", cfg.shots)) + cfg.queries > smallest:
        raise ConfigError(f"shots + queries ({max(cfg.shots)} + {cfg.queries}) exceed the {smallest} test images of "
                          "the smallest chosen class")
    features = fewshot.embed(fewshot.backbone(model, tuple(images.shape[1:])), images, cfg.batch_size)
    rows = []
    for shots in sorted(set(positive_ints("shots", cfg.shots))):
        accuracies = fewshot.episode_accuracies(features, labels, cfg.ways, shots, cfg.queries, cfg.episodes,
                                                cfg.distance, cfg.seed)
        summary = stats.describe(accuracies.tolist())
        low, high = max(summary.ci_low, 0.0), min(summary.ci_high, 1.0)  # an accuracy's interval stays in [0, 1]
        rows.append({"ways": cfg.ways, "shots": shots, "queries": cfg.queries, "episodes": cfg.episodes,
                     "acc": summary.mean, "std": summary.std, "ci_low": low, "ci_high": high,
                     "distance": cfg.distance, "classes": " ".join(map(str, classes))})
        print(f"{cfg.ways}-way {shots}-shot: {summary.mean:.4f} [{low:.4f}, {high:.4f}]", flush=True)
    shown = ", ".join(f"{names[c]} ({c})" for c in classes)
    title = f"Few-shot accuracy of {cfg.model} on {job.dataset}"
    note = (f"{len(labels)} test images of {job.dataset}'s classes {shown}; the model was trained on "
            f"{model.spec.data} ({', '.join(model.class_names)}). Features: its net up to the last linear layer "
            f"({features.shape[1]} values per image). Each episode draws {cfg.ways} of these classes, k support and "
            f"{cfg.queries} query images of each, and classifies the queries by the nearest class mean "
            f"({cfg.distance} distance; Snell et al. 2017); accuracy is the mean over {cfg.episodes} episodes with a "
            "95% Student-t interval (cut at 0 and 1).")
    metrics = {f"fewshot/{r['ways']}way_{r['shots']}shot_acc": r["acc"] for r in rows}
    return Report(title, [Section(text=note, table=Table("results", COLUMNS, rows, caption=title))],
                  figures=[accuracy_figure(rows, title)], metrics=metrics)


VERB = Verb("fewshot", __doc__, run, check=check, takes_model=True, choices={"distance": fewshot.DISTANCES})
