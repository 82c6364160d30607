"""`imgrec attack model=<uri> [attack=pgd | attack=[fgsm,pgd]] [eps=[0,0.05,0.1]] [steps=20] [restarts=1]
[n=1000]`: robust accuracy of a trained model, per attack and eps, on its test split.

The first `n` test images of the model's own dataset are attacked (imgrec.robust.attacks: L-infinity,
untargeted, eps in [0, 1] pixels; autoattack is ART's AutoAttack: APGD-CE, APGD-DLR and Square). Writes
outputs/attack/<run id>/ and an `attack` child run of the model's run (metrics `robust/<attack>/acc_eps<eps>`:
MLflow names cannot hold '@'): report.md, results.csv (attack, eps, n, clean_acc, robust_acc and the attack's
settings), robust_acc.png (robust accuracy against eps) and examples.png (adversarial images with what the
model predicts for them).
"""

import torch

from imgrec import pictures
from imgrec.errors import ConfigError
from imgrec.jobs import ModelJob, Verb
from imgrec.report import Column, Figure, Report, Section, Table, figure, text_column
from imgrec.robust.attacks import AttackSettings, pgd_settings, run_attack

ATTACKS = ("fgsm", "pgd", "autoattack")
COLUMNS = [text_column("attack", "attack"), Column("eps", "eps", "g"), Column("n", "n"),
           Column("clean acc", "clean_acc", ".4f"), Column("robust acc", "robust_acc", ".4f"),
           text_column("settings", "settings")]


def settings_of(cfg, attack: str, eps: float) -> AttackSettings:
    if attack in ("fgsm", "autoattack"):
        return AttackSettings(attack, eps)
    return pgd_settings(eps, cfg.steps, cfg.step_size, cfg.restarts)


def check(job: ModelJob) -> None:
    attacks_and_eps(job.cfg)


def attacks_and_eps(cfg) -> tuple[list[str], list[float]]:
    attacks = [cfg.attack] if isinstance(cfg.attack, str) else list(cfg.attack)
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ConfigError(f"attack: unknown {unknown}; choose from {', '.join(ATTACKS)}")
    eps = [float(e) for e in ([cfg.eps] if isinstance(cfg.eps, (int, float)) else cfg.eps)]
    if any(e < 0 or e > 1 for e in eps):
        raise ConfigError(f"eps: every value must be in [0, 1] (pixel units), got {eps}")
    if not isinstance(cfg.steps, int) or cfg.steps < 1 or not isinstance(cfg.restarts, int) or cfg.restarts < 1:
        raise ConfigError(f"steps and restarts must be positive integers, got {cfg.steps!r} and {cfg.restarts!r}")
    return attacks, sorted(set(eps))


def predictions(model, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def attack_all(model, images, labels, settings: AttackSettings, batch_size: int) -> torch.Tensor:
    """The adversarial images, batch by batch."""
    adversarial = []
    for start in range(0, len(images), batch_size):
        with torch.enable_grad():
            adversarial.append(run_attack(model, images[start : start + batch_size], labels[start : start + batch_size],
                                          settings))
    return torch.cat(adversarial)


def robust_acc_figure(rows: list[dict], title: str) -> Figure:
    def draw():
        fig, ax = figure(6.0, 4.0)
        for attack in dict.fromkeys(r["attack"] for r in rows):
            points = [r for r in rows if r["attack"] == attack]
            ax.plot([r["eps"] for r in points], [100 * r["robust_acc"] for r in points], marker="o", label=attack)
        ax.set_xlabel("eps (L-infinity, [0, 1] pixels)")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=9)
        ax.legend()
        ax.grid(alpha=0.3)
        return fig

    return Figure("robust_acc.png", draw)


def run(job: ModelJob) -> Report:
    cfg, model = job.cfg, job.model
    attacks, eps_values = attacks_and_eps(cfg)
    images, labels = job.test_split(cfg.n)
    clean_preds = predictions(model, images, cfg.batch_size)
    clean_acc = float((clean_preds == labels).float().mean())
    torch.manual_seed(cfg.seed)

    rows, shown = [], {"clean": (images[: cfg.examples], clean_preds[: cfg.examples])}
    for attack in attacks:
        for eps in eps_values:
            chosen = settings_of(cfg, attack, eps)
            adversarial = attack_all(model, images, labels, chosen, cfg.batch_size)
            preds = predictions(model, adversarial, cfg.batch_size)
            robust = float((preds == labels).float().mean())
            rows.append({"attack": attack, "eps": eps, "n": len(labels), "clean_acc": clean_acc, "robust_acc": robust,
                         "steps": chosen.steps, "step_size": chosen.step_size, "restarts": chosen.restarts,
                         "random_start": chosen.random_start, "norm": chosen.norm, "settings": chosen.describe()})
            shown[f"{attack} {eps:g}"] = (adversarial[: cfg.examples], preds[: cfg.examples])
            print(f"{chosen.describe()}: robust acc {robust:.4f} (clean {clean_acc:.4f}, n {len(labels)})", flush=True)

    title = f"Robustness of {cfg.model} ({model.spec.data} test split)"
    names = model.class_names
    examples = Figure("examples.png", lambda: pictures.rows_figure(
        {k: v[0] for k, v in shown.items()}, f"{cfg.model}: adversarial images and what the model predicts",
        {k: [names[p] for p in v[1].tolist()] for k, v in shown.items()}))
    note = (f"The first {len(labels)} test images; L-infinity attacks in [0, 1] pixel units, untargeted, "
            f"on the true label; clean accuracy {clean_acc:.4f}.")
    metrics = {"clean_acc": clean_acc, **{f"robust/{r['attack']}/acc_eps{r['eps']:g}": r["robust_acc"] for r in rows}}
    return Report(title, [Section(text=note, table=Table("results", COLUMNS, rows, caption=title))],
                  figures=[robust_acc_figure(rows, title), examples], metrics=metrics)


VERB = Verb("attack", __doc__, run, check=check, takes_model=True, choices={"attack": ATTACKS})
