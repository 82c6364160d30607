"""Adversarial robustness: attacks stay in the eps-ball and [0, 1], PGD is at least as strong as FGSM,
adversarial training buys robustness, the task logs robust accuracy, the attack script."""

import csv

import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient

from imgrec.robust.attacks import AttackSettings, autoattack, fgsm, fgsm_rs, pgd, pgd_settings, run_attack, trades_kl
from imgrec.tasks.adversarial import Adversarial
from imgrec.train import train
from tests.conftest import cli, model_job_args, runs
from tests.learnable import region_data, train_region_model


@pytest.fixture(scope="module")
def standard_model():
    return train_region_model()


def accuracy(model, images, labels) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "pgd_restarts", "fgsm_rs", "trades_kl"])
def test_attacks_stay_in_the_eps_ball_and_in_pixel_range(standard_model, attack):
    images, labels = region_data(64, torch.Generator().manual_seed(1))
    images[0] = 0.0  # corners of the pixel range: clipping must hold there too
    images[1] = 1.0
    eps = 0.1
    with torch.enable_grad():
        adversarial = {"fgsm": lambda: fgsm(standard_model, images, labels, eps),
                       "pgd": lambda: pgd(standard_model, images, labels, pgd_settings(eps, 10)),
                       "pgd_restarts": lambda: pgd(standard_model, images, labels, pgd_settings(eps, 5, restarts=3)),
                       "fgsm_rs": lambda: fgsm_rs(standard_model, images, labels, eps),
                       "trades_kl": lambda: trades_kl(standard_model, images, eps, 5, 0.03)}[attack]()
    assert adversarial.shape == images.shape
    assert (adversarial - images).abs().max() <= eps + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert (adversarial != images).any()  # it moved


@pytest.mark.slow
def test_autoattack_stays_in_the_ball_and_is_at_least_as_strong_as_pgd(standard_model):
    pytest.importorskip("art", reason="pip install 'imgrec[robust]' (adversarial-robustness-toolbox)")
    images, labels = region_data(24, torch.Generator().manual_seed(4))
    with torch.enable_grad():
        strong = autoattack(standard_model, images, labels, 0.1, square_queries=500)  # 5000, the standard: most of its time
        by_pgd = accuracy(standard_model, pgd(standard_model, images, labels, pgd_settings(0.1, 10)), labels)
    assert (strong - images).abs().max() <= 0.1 + 1e-6 and strong.min() >= 0 and strong.max() <= 1
    assert accuracy(standard_model, strong, labels) <= by_pgd


def test_eps_zero_is_clean_accuracy_and_pgd_is_at_least_as_strong_as_fgsm(standard_model):
    images, labels = region_data(256, torch.Generator().manual_seed(2))
    clean = accuracy(standard_model, images, labels)
    with torch.enable_grad():
        for settings in (AttackSettings("fgsm", 0.0), pgd_settings(0.0, 10)):
            assert accuracy(standard_model, run_attack(standard_model, images, labels, settings), labels) == clean
        by_fgsm = accuracy(standard_model, fgsm(standard_model, images, labels, 0.1), labels)
        by_pgd = accuracy(standard_model, pgd(standard_model, images, labels, pgd_settings(0.1, 20)), labels)
    assert by_pgd <= by_fgsm < clean


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs", "trades"])
def test_adversarial_training_is_more_robust_at_its_eps_than_standard_training(standard_model, method):
    adversarial = Adversarial(method=method, eps=0.1, steps=5)

    def loss_of(model, images, labels):
        return adversarial.training_loss(model, model, images, labels, F.cross_entropy)[0]

    robust_model = train_region_model(loss_of=loss_of)  # the same steps, data and seed as standard_model
    images, labels = region_data(512, torch.Generator().manual_seed(3))
    with torch.enable_grad():
        attacked = {name: pgd(m, images, labels, pgd_settings(0.1, 10))
                    for name, m in (("standard", standard_model), ("robust", robust_model))}
    standard_acc = accuracy(standard_model, attacked["standard"], labels)
    robust_acc = accuracy(robust_model, attacked["robust"], labels)
    assert robust_acc > standard_acc + 0.2, (standard_acc, robust_acc)
    assert accuracy(robust_model, images, labels) > 0.95  # still accurate on clean images


def test_an_unknown_method_is_named():
    with pytest.raises(ValueError, match="task.adversarial.method: unknown 'madry'"):
        Adversarial(method="madry")


def test_autoattack_at_test_needs_an_eps_to_attack_at():
    with pytest.raises(ValueError, match="autoattack_images needs an eps"):
        Adversarial(autoattack_images=100)


def test_eps_zero_trains_on_clean_images_and_still_measures_robustness():
    standard = Adversarial(method="fgsm_rs", eps=0.0, eval_eps=0.1)  # a sweep's reference point
    assert not standard.trains_adversarially and standard.robust_eps == 0.1
    assert Adversarial(method="fgsm_rs", eps=0.05).trains_adversarially and not Adversarial().trains_adversarially


@pytest.mark.slow
def test_adversarial_training_in_the_pipeline_logs_robust_accuracy(make_cfg, mlflow_client, idx_root):
    train(make_cfg("data=mnist", f"data.root={idx_root}", "model.channels=[8,16]", "model.fc=[32]",
                   "task.adversarial.method=pgd", "task.adversarial.eps=0.1", "task.adversarial.steps=2",
                   "task.adversarial.val_steps=2", "task.adversarial.test_steps=3", "task.adversarial.autoattack_images=6"))
    (run,) = runs(mlflow_client)
    metrics = run.data.metrics
    assert run.info.status == "FINISHED"
    assert 0 <= metrics["val/robust_acc"] <= 1 and 0 <= metrics["test/robust_acc"] <= metrics["test/acc"] + 0.05
    assert metrics["test/autoattack_acc"] in [k / 6 for k in range(7)]  # AutoAttack on the first 6 test images
    assert run.data.params["task.adversarial.method"] == "pgd"


@pytest.mark.slow
def test_attack_writes_results_report_and_plots_on_gray_and_rgb_models(trained_classifier, tmp_path):
    cli("attack", *model_job_args(trained_classifier), "attack=[fgsm,pgd]", "eps=[0,0.1]", "steps=3", "n=32",
           "examples=4")
    run_id = trained_classifier["run"].info.run_id
    out = tmp_path / "outputs" / "attack" / run_id
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert list(rows[0])[:5] == ["attack", "eps", "n", "clean_acc", "robust_acc"]
    assert [(r["attack"], float(r["eps"])) for r in rows] == [("fgsm", 0), ("fgsm", 0.1), ("pgd", 0), ("pgd", 0.1)]
    assert all(r["robust_acc"] == r["clean_acc"] for r in rows if float(r["eps"]) == 0)
    assert "PGD-3, eps 0.1" in (out / "report.md").read_text()
    assert (out / "robust_acc.png").stat().st_size and (out / "examples.png").stat().st_size
    (tracked,) = [r for r in runs(MlflowClient(trained_classifier["tracking"])) if r.info.run_name == "attack"]
    assert tracked.data.tags["imgrec.source_run"] == run_id
    assert {"clean_acc", "robust/pgd/acc_eps0.1", "robust/fgsm/acc_eps0"} <= set(tracked.data.metrics)
