"""`python scripts/attack.py model=<uri> [attack=pgd | attack=[fgsm,pgd]] [eps=[0,0.05,0.1]] [steps=20]
[restarts=1] [n=1000]`: robust accuracy of a trained model, per attack and eps, on its test split.

The first `n` test images of the model's own dataset are attacked (imgrec.robust.attacks: L-infinity,
eps in [0, 1] pixels). Writes to outputs/attack/<run id>/ and logs to an `attack` child run of the
model's run (metrics `robust/<attack>/acc_eps<eps>`: MLflow names cannot hold '@'): results.csv (attack, eps, n, clean_acc, robust_acc and
the attack's settings), report.md, robust_acc.png (robust accuracy against eps) and examples.png
(adversarial images with what the model predicts for them).
"""

import csv
import io
from collections.abc import Sequence

import matplotlib
import torch

from imgrec import drivers, hub
from imgrec.errors import ConfigError
from imgrec.pictures import save_rows
from imgrec.robust.attacks import AttackSettings, pgd_settings, run_attack

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ATTACKS = ("fgsm", "pgd", "autoattack")
COLUMNS = ("attack", "eps", "n", "clean_acc", "robust_acc", "steps", "step_size", "restarts", "random_start", "norm")


def settings_of(cfg, attack: str, eps: float) -> AttackSettings:
    if attack in ("fgsm", "autoattack"):
        return AttackSettings(attack, eps)
    return pgd_settings(eps, cfg.steps, cfg.step_size, cfg.restarts)


def check(cfg) -> tuple[list[str], list[float]]:
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


def attack_all(model, images, labels, settings: AttackSettings, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial images, the model's predictions for them)."""
    adversarial, preds = [], []
    for start in range(0, len(images), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        with torch.enable_grad():
            x_adv = run_attack(model, x, y, settings)
        adversarial.append(x_adv)
        with torch.no_grad():
            preds.append(model(x_adv).argmax(dim=1))
    return torch.cat(adversarial), torch.cat(preds)


def plot(rows: list[dict], path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for attack in dict.fromkeys(r["attack"] for r in rows):
        points = [r for r in rows if r["attack"] == attack]
        ax.plot([r["eps"] for r in points], [100 * r["robust_acc"] for r in points], marker="o", label=attack)
    ax.set_xlabel("eps (L-infinity, [0, 1] pixels)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows: list[dict], settings: dict[tuple[str, float], AttackSettings], title: str, note: str) -> str:
    lines = [f"# {title}", "", note, "", "| attack | eps | n | clean acc | robust acc | settings |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['attack']} | {r['eps']:g} | {r['n']} | {r['clean_acc']:.4f} | {r['robust_acc']:.4f} | "
                     f"{settings[(r['attack'], r['eps'])].describe()} |")
    return "\n".join(lines) + "\n"


def run(argv: Sequence[str]) -> None:
    cfg = drivers.compose("attack", argv, plain_keys=("model",))
    attacks, eps_values = check(cfg)
    job = drivers.ModelJob.open(cfg, "attack")
    model = job.model
    images, labels = hub.test_split(model, cfg.data.root)
    images, labels = images[: cfg.n], labels[: cfg.n]
    with torch.no_grad():
        clean_preds = torch.cat([model(images[i : i + cfg.batch_size]).argmax(1) for i in range(0, len(images), cfg.batch_size)])
    clean_acc = float((clean_preds == labels).float().mean())
    torch.manual_seed(cfg.seed)

    rows, settings, examples = [], {}, {}
    for attack in attacks:
        for eps in eps_values:
            chosen = settings[(attack, eps)] = settings_of(cfg, attack, eps)
            adversarial, preds = attack_all(model, images, labels, chosen, cfg.batch_size)
            robust = float((preds == labels).float().mean())
            rows.append({"attack": attack, "eps": eps, "n": len(labels), "clean_acc": clean_acc, "robust_acc": robust,
                         "steps": chosen.steps, "step_size": chosen.step_size, "restarts": chosen.restarts,
                         "random_start": chosen.random_start, "norm": chosen.norm})
            examples[f"{attack} {eps:g}"] = (adversarial[: cfg.examples], preds[: cfg.examples])
            print(f"{chosen.describe()}: robust acc {robust:.4f} (clean {clean_acc:.4f}, n {len(labels)})", flush=True)

    out = job.out_dir
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    (out / "results.csv").write_text(buffer.getvalue())
    title = f"Robustness of {cfg.model} ({model.spec.data} test split)"
    note = (f"The first {len(labels)} test images; L-infinity attacks in [0, 1] pixel units, untargeted, "
            f"on the true label; clean accuracy {clean_acc:.4f}.")
    text = markdown(rows, settings, title, note)
    (out / "report.md").write_text(text)
    plot(rows, out / "robust_acc.png", title)
    names = model.class_names
    shown = {"clean": images[: cfg.examples], **{k: v[0] for k, v in examples.items()}}
    captions = {"clean": [names[p] for p in clean_preds[: cfg.examples].tolist()],
                **{k: [names[p] for p in v[1].tolist()] for k, v in examples.items()}}
    save_rows(shown, out / "examples.png", f"{cfg.model}: adversarial images and what the model predicts", captions)

    tracked = job.child_run("attack", {"model": cfg.model, "attacks": ",".join(attacks), "eps": eps_values,
                                       "n": len(labels), "steps": cfg.steps, "restarts": cfg.restarts})
    with tracked.running():
        tracked.log({"clean_acc": clean_acc, **{f"robust/{r['attack']}/acc_eps{r['eps']:g}": r["robust_acc"] for r in rows}},
                    [out / name for name in ("results.csv", "report.md", "robust_acc.png", "examples.png")])
    print(text)
    print(f"{out} (MLflow run {tracked.run_id})")


def main(argv: Sequence[str] | None = None) -> None:
    drivers.main(run, argv, usage=__doc__.split("\n\n")[0], required="model")
