"""`imgrec corrupt model=<uri> [corruptions=[...]] [severity=[1,2,3,4,5]] [n=10000] [reference=<uri>] [save=DIR]
[data=<name>] [data.root=...]`: how a trained model copes with noisy, blurred, shifted and otherwise corrupted images.

Every corruption of imgrec.data.corruptions (CIFAR-10-C's, with its severity constants, and MNIST-C's rotate, shear,
translate and zoom) at each severity is applied to the first `n` test images of the model's dataset (or of
data=<name>, which must fit the model), drawn from `seed`, and the model classifies them. The report gives the
accuracy per corruption and severity, the clean accuracy, the mean corruption accuracy, and with `reference=<uri>`
(a model of the same data, say one trained the standard way) the corruption errors of Hendrycks & Dietterich 2019:
CE = sum over severities of the model's error / the reference's, and the relative CE, the same for the error above
each model's clean error; mCE and relative mCE are their means over corruptions (the reference's are 1).
Writes outputs/corrupt/<run id>/ and a `corrupt` child run of the model's run: report.md, results.csv (corruption,
severity, n, acc, error, reference_acc), per_corruption.csv, heatmap.png (accuracy per corruption and severity) and
grid.png (one test image under every corruption and severity). `save=DIR` also writes the corrupted test split as
the dataset's own files, DIR/<corruption>/<severity>/, with manifest.json: `imgrec evaluate data=<name>
data.root=DIR/<corruption>/<severity>` reads it.
"""

import json
from pathlib import Path

import torch

from imgrec import hub
from imgrec.data import catalog
from imgrec.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corruptions_for, generator_for
from imgrec.errors import ConfigError
from imgrec.jobs import ModelJob, Verb
from imgrec.pictures import grid_figure
from imgrec.report import Column, Figure, Report, Section, Table, figure, text_column
from imgrec.robust.corruption_eval import corruption_errors, mean_errors

COLUMNS = [text_column("corruption", "corruption"), Column("severity", "severity"), Column("n", "n"),
           Column("accuracy", "acc", ".4f"), Column("reference", "reference_acc", ".4f")]
SUMMARY = [text_column("corruption", "corruption"), Column("mean accuracy", "acc", ".4f"),
           Column("CE", "ce", ".3f"), Column("relative CE", "relative_ce", ".3f")]


def chosen(cfg, channels: int) -> tuple[list[str], list[int]]:
    """(the corruptions, the severities): every corruption that applies to the model's images when none are named."""
    names = corruptions_for(channels) if cfg.corruptions is None else (
        [cfg.corruptions] if isinstance(cfg.corruptions, str) else list(cfg.corruptions))
    unknown = [name for name in names if name not in CORRUPTIONS]
    if unknown or not names:
        raise ConfigError(f"corruptions: unknown {unknown or names}; the corruptions are {', '.join(CORRUPTIONS)}")
    colour = [name for name in names if name not in corruptions_for(channels)]
    if colour:
        raise ConfigError(f"corruptions: {', '.join(colour)} changes colour; the model takes {channels}-channel images")
    levels = [cfg.severity] if isinstance(cfg.severity, int) else list(cfg.severity)
    if not levels or not all(isinstance(s, int) and s in SEVERITIES for s in levels):
        raise ConfigError(f"severity: integers from 1 to 5, got {cfg.severity!r}")
    if not isinstance(cfg.n, int) or cfg.n < 1:
        raise ConfigError(f"n must be a positive integer, got {cfg.n!r}")
    return names, sorted(set(levels))


def reference_model(job: ModelJob):
    """The reference model of reference=<uri>, checked to classify the same images into the same classes."""
    if job.cfg.reference is None:
        return None
    reference = hub.load_model(str(job.cfg.reference), job.cfg.logger.tracking_uri, key="reference")
    mine, theirs = job.model.spec, reference.spec
    if tuple(theirs.in_shape) != tuple(mine.in_shape) or reference.class_names != job.model.class_names:
        raise ConfigError(f"reference: {job.cfg.reference} takes {'x'.join(map(str, theirs.in_shape))} images of "
                          f"{theirs.data} into {len(reference.class_names)} classes; the model takes "
                          f"{'x'.join(map(str, mine.in_shape))} images of {mine.data} into {len(job.model.class_names)}")
    return reference


def check(job: ModelJob) -> None:
    chosen(job.cfg, job.model.spec.in_shape[0])
    job.fitting_classes()
    reference_model(job)
    if job.cfg.save is not None and (job.dataset not in catalog.DATASETS or job.dataset == "digits"):
        raise ConfigError(f"save: writes a built-in dataset's own file format (IDX, CIFAR pickles); {job.dataset} has "
                          "none to write in (digits come from scikit-learn; your own images from a folder or hub)")


@torch.inference_mode()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    right = sum(int((model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum())
                for i in range(0, len(images), batch_size))
    return right / len(labels)


def per_corruption_table(rows: list[dict], names: list[str]) -> list[dict]:
    """Per corruption: its mean accuracy over severities and, with a reference, its CE and relative CE."""
    clean = rows[0]
    mean = {name: [r for r in rows if r["corruption"] == name] for name in names}
    accuracy = {name: sum(r["acc"] for r in mine) / len(mine) for name, mine in mean.items()}
    errors = {}
    if clean.get("reference_acc") is not None:
        reference = {name: sum(r["reference_acc"] for r in mine) / len(mine) for name, mine in mean.items()}
        errors = corruption_errors(accuracy, clean["acc"], reference, clean["reference_acc"])
    return [{"corruption": name, "acc": accuracy[name], **errors.get(name, {"ce": None, "relative_ce": None})}
            for name in names]


def heatmap(rows: list[dict], names: list[str], levels: list[int], title: str) -> Figure:
    def draw():
        values = torch.tensor([[next(r["acc"] for r in rows if r["corruption"] == name and r["severity"] == s)
                                for s in levels] for name in names]) * 100
        fig, ax = figure(1.0 * len(levels) + 3.2, 0.32 * len(names) + 1.4)
        shown = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for i in range(len(names)):
            for j in range(len(levels)):
                ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] < 60 else "black")
        ax.set_xticks(range(len(levels)), [str(s) for s in levels])
        ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=8)
        ax.set_xlabel("severity")
        ax.set_title(title, fontsize=9)
        fig.colorbar(shown, ax=ax, label="accuracy (%)")
        return fig

    return Figure("heatmap.png", draw)


def save_corrupted(job: ModelJob, name: str, severity: int, images: torch.Tensor, labels: torch.Tensor,
                   class_names: tuple[str, ...]) -> dict:
    """One corrupted test split in the dataset's own files, DIR/<corruption>/<severity>/, beside links to the clean
    training files (written once to DIR/.train: the dataset's readers want both parts); its manifest entry."""
    root, spec = Path(job.cfg.save), catalog.get_spec(job.dataset)
    train = root / ".train"
    if not train.exists():
        files = catalog.load_dataset(job.dataset, job.data_root, download=False)
        catalog.write_split(job.dataset, train, "train", files.train_images, files.train_labels)
    where = root / name / str(severity)
    own_labels = torch.tensor([spec.class_names.index(class_names[label]) for label in labels.tolist()])
    catalog.write_split(job.dataset, where, "test", (images * 255).round().to(torch.uint8).numpy(), own_labels.numpy())
    for file in (f for f in train.rglob("*") if f.is_file()):
        link = where / file.relative_to(train)
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path("../" * len(link.relative_to(root).parts[:-1])) / file.relative_to(root))
    return {"corruption": name, "severity": severity, "root": str(where)}


def run(job: ModelJob) -> Report:
    cfg, model = job.cfg, job.model
    names, levels = chosen(cfg, model.spec.in_shape[0])
    reference = reference_model(job)
    images, labels, class_names = job.evaluation_split(cfg.n)
    models = {"acc": model, **({"reference_acc": reference} if reference is not None else {})}
    rows = [{"corruption": "clean", "severity": 0, "n": len(labels),
             **{key: accuracy(m, images, labels, cfg.batch_size) for key, m in models.items()}}]
    shown, saved = {}, []
    for name in names:
        for severity in levels:
            bad = corrupt(images, name, severity, generator_for(cfg.seed, name, severity))
            rows.append({"corruption": name, "severity": severity, "n": len(labels),
                         **{key: accuracy(m, bad, labels, cfg.batch_size) for key, m in models.items()}})
            shown[(name, severity)] = bad[cfg.example]
            if cfg.save is not None:
                saved.append(save_corrupted(job, name, severity, bad, labels, class_names))
        print(f"{name}: " + "  ".join(f"{r['acc']:.4f}" for r in rows[-len(levels):]), flush=True)
    for row in rows:
        row["error"] = 1 - row["acc"]
    per_corruption = per_corruption_table(rows, names)
    clean = rows[0]["acc"]
    mca = sum(r["acc"] for r in per_corruption) / len(per_corruption)
    metrics = {"corrupt/clean_acc": clean, "corrupt/mca": mca,
               **{f"corrupt/{r['corruption']}_acc": r["acc"] for r in per_corruption}}
    if reference is not None:
        means = mean_errors({r["corruption"]: r for r in per_corruption})
        metrics.update({"corrupt/reference_clean_acc": rows[0]["reference_acc"],
                        **{f"corrupt/{key}": value for key, value in means.items()}})
    if cfg.save is not None:
        manifest = {"dataset": job.dataset, "source": str(job.data_root), "test_images": len(labels),
                    "seed": cfg.seed, "corruptions": "imgrec.data.corruptions", "sets": saved,
                    "note": "each set's test split is corrupted; its training files are the source's, unchanged"}
        (Path(cfg.save) / "manifest.json").write_text(json.dumps(manifest, indent=1))

    title = f"Corruption robustness of {cfg.model} ({job.dataset} test split)"
    text = [f"The first {len(labels)} test images of {job.dataset}: clean accuracy {clean:.4f}; mean accuracy over "
            f"{len(names)} corruptions x severities {', '.join(map(str, levels))}: **{mca:.4f}** (a drop of "
            f"{clean - mca:.4f})."]
    if reference is not None:
        text.append(f"Against the reference {cfg.reference} (clean accuracy {rows[0]['reference_acc']:.4f}): "
                    f"mCE {metrics.get('corrupt/mce', float('nan')):.3f}, relative mCE "
                    f"{metrics.get('corrupt/relative_mce', float('nan')):.3f} (below 1: more robust than the "
                    "reference; Hendrycks & Dietterich 2019's CE, errors summed over severities).")
    grid_rows = [images[cfg.example], *[shown[(name, s)] for name in names for s in levels]]
    columns = len(levels)
    pictures = torch.stack([*[grid_rows[0]] * columns, *grid_rows[1:]])
    grid = Figure("grid.png", lambda: grid_figure(
        pictures, columns, f"test image {cfg.example} clean, then under each corruption (columns: severity "
        f"{', '.join(map(str, levels))})", ["clean", *names]))
    worst = sorted(per_corruption, key=lambda r: r["acc"])[:3]
    bullets = ["hardest: " + ", ".join(f"{r['corruption']} ({r['acc']:.3f})" for r in worst)]
    return Report(title, [Section(text=text, table=Table("per_corruption", SUMMARY, per_corruption, caption=title),
                                  bullets=bullets),
                          Section("Every corruption and severity",
                                  table=Table("results", COLUMNS if reference is not None else COLUMNS[:-1], rows))],
                  figures=[heatmap(rows[1:], names, levels, title), grid], metrics=metrics)


VERB = Verb("corrupt", __doc__, run, check=check, takes_model=True, choices={"corruptions": list(CORRUPTIONS)})
