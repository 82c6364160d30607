"""Modern training recipes: augmentation policies (RandAugment, TrivialAugment, random erasing, mixup and CutMix,
progressive resizing), stochastic depth, and Lightning's learning-rate finder (`imgrec tune`, optimizer.lr=auto)."""

import math

import pytest
import torch
from mlflow import MlflowClient

from imgrec.data.augment import Augment, Progressive, mix, random_erasing
from imgrec.models.layers import DropPath, drop_path_rates
from imgrec.train import train
from tests.conftest import cli, runs

SMALL = ["model.channels=[8]", "model.fc=[16]", "logger.log_model=false"]


def test_random_erasing_fills_a_rectangle_of_the_images_it_picks_with_the_fill():
    torch.manual_seed(0)
    images = torch.rand(400, 3, 16, 16) + 2  # no pixel equals the fill
    erased = random_erasing(images, 0.5, fill=torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1))
    touched = (erased != images).flatten(1).any(1)
    assert 0.4 < float(touched.float().mean()) < 0.6  # p
    area = (erased[touched, 0] == 0.1).flatten(1).float().mean(1)
    assert float(area.min()) > 0.0 and float(area.max()) <= 0.36  # scale (0.02, 0.33) of the area, sides rounded
    assert torch.equal(erased[~touched], images[~touched])


def test_mixup_and_cutmix_give_soft_targets_whose_share_is_the_images():
    torch.manual_seed(0)
    images = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)]).repeat(2, 1, 1, 1)  # 0, 1, 0, 1
    labels = torch.tensor([0, 1, 0, 1])
    mixed, targets = mix(images, labels, 3, mixup=0.4, cutmix=0.0, switch_prob=0.5)
    lam = float(targets[0, 0])
    assert torch.allclose(targets.sum(1), torch.ones(4)) and targets[:, 2].abs().max() == 0
    assert torch.allclose(mixed[0], torch.full((1, 8, 8), 1 - lam))  # image 0 mixed with its partner, image 3
    mixed, targets = mix(images, labels, 3, mixup=0.0, cutmix=1.0, switch_prob=0.5)
    share_of_partner = float(mixed[0].mean())  # image 0 is zeros, its partner ones: the box's area
    assert targets[0, 1] == pytest.approx(share_of_partner, abs=1e-6) and targets[0, 0] == pytest.approx(
        1 - share_of_partner, abs=1e-6)
    off = Augment(mixup=0.2, mix_off_epoch=3)
    assert off.mixed(images, labels, 3, epoch=3)[1] is labels and off.mixed(images, labels, 3, 2)[1].ndim == 2


def test_randaugment_and_trivialaugment_change_images_differently_and_keep_pixels():
    torch.manual_seed(0)
    images = torch.rand(64, 3, 12, 12)
    for augment in (Augment(randaugment={"ops": 2, "magnitude": 9}), Augment(randaugment=[2, 9]),
                    Augment(trivialaugment=True)):
        out = augment(images)
        assert out.shape == images.shape and 0 <= float(out.min()) and float(out.max()) <= 1
        changed = (out - images).abs().flatten(1).amax(1) > 1e-6
        assert 0.3 < float(changed.float().mean()) <= 1.0
    with pytest.raises(TypeError, match="randaugment takes"):
        Augment(randaugment={"ops": 0})


def test_progressive_resizing_follows_composers_schedule_in_multiples_of_four():
    schedule = Progressive(start=0.5, delay=0.2, finetune=0.2)
    assert [schedule.scale(p) for p in (0.0, 0.2, 0.5, 0.8, 1.0)] == pytest.approx([0.5, 0.5, 0.75, 1.0, 1.0])
    images = torch.rand(2, 1, 32, 32)
    assert schedule(images, 0.1).shape[-2:] == (16, 16) and schedule(images, 0.5).shape[-2:] == (24, 24)
    assert schedule(images, 0.9) is images
    assert Progressive(start=0.5, mode="crop")(images, 0.0).shape[-2:] == (16, 16)


def test_mixed_batches_train_a_classifier_on_soft_targets_with_train_acc_on_the_dominant_label(make_cfg):
    cfg = make_cfg("data=digits", "data.augment.mixup=0.2", "data.augment.cutmix=1.0",
                   "data.augment.randaugment={ops:1,magnitude:5}", "data.augment.random_erasing=0.25", *SMALL)
    train(cfg)
    (run,) = runs(MlflowClient(cfg.logger.tracking_uri))
    assert run.info.status == "FINISHED" and 0 <= run.data.metrics["train/acc"] <= 1


def test_stochastic_depth_drops_whole_samples_in_training_only_and_grows_linearly_with_depth():
    torch.manual_seed(0)
    drop = DropPath(0.5)
    branch = torch.ones(1000, 4)
    kept = drop(branch)
    assert set(kept[:, 0].tolist()) == {0.0, 2.0} and (kept == kept[:, :1]).all()  # whole samples, scaled 1/(1-p)
    assert torch.equal(drop.eval()(branch), branch)
    assert drop_path_rates(0.2, 5) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    from imgrec.models.resnet import CifarResNet
    from imgrec.models.vit import ViT

    net = CifarResNet((1, 28, 28), 10, depth=20, drop_path=0.3)
    rates = [m.p for m in net.modules() if isinstance(m, DropPath)]
    assert len(rates) == 9 and rates[0] == 0 and rates[-1] == pytest.approx(0.3)
    vit = ViT((1, 28, 28), 10, depth=3, drop_path=0.2)
    assert [layer.drop_path.p for layer in vit.encoder.layers] == pytest.approx([0.0, 0.1, 0.2])
    plain = ViT((1, 28, 28), 10, depth=3)
    assert vit.state_dict().keys() == plain.state_dict().keys()  # checkpoints load across drop rates


@pytest.mark.parametrize("overrides, message", [
    (["data.augment.randaug=2"], "data.augment.randaug: no such key in data.augment (did you mean "
                                 "data.augment.randaugment?)"),
    (["task=autoencoding", "model=autoencoder", "data.augment.mixup=0.2"],
     "data.augment.mixup: mixed images have soft targets, which only a classifier's loss takes"),
    (["model.drop_path=0.1"], "model.drop_path: no such key in model: this family has no residual blocks"),
    (["optimizer.lr=auto", "trainer=ddp_cpu"], "optimizer.lr=auto: Lightning's learning-rate finder runs in one "
                                              "process, not under DDP"),
    (["data.augment.progressive={start:0.5}"], "data.augment.progressive: this network cannot take 4x4 images"),
])
def test_bad_recipes_are_one_line(project, overrides, message):
    with pytest.raises(SystemExit) as error:
        cli("train", f"paths.root={project}", "data=digits", "trainer.max_epochs=1", *overrides)
    assert message in str(error.value.code) and "\n" not in str(error.value.code)
    assert not runs(MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db"))


def test_tune_plots_the_finder_and_lr_auto_trains_with_its_suggestion(project):
    report = cli("tune", f"paths.root={project}", "data=digits", "steps=30", *SMALL)
    client = MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    (tune_run,) = runs(client)
    suggestion = tune_run.data.metrics["tune/suggested_lr"]
    assert 1e-6 <= suggestion <= 10 and report.metrics["tune/suggested_lr"] == suggestion
    assert (project / "outputs" / "tune" / tune_run.info.run_id / "lr_find.png").stat().st_size > 10_000
    cli("train", f"paths.root={project}", "data=digits", "optimizer.lr=auto", "trainer.max_epochs=1", *SMALL)
    trained = [r for r in runs(client) if "test/acc" in r.data.metrics]
    (run,) = trained
    assert float(run.data.params["optimizer.lr"]) == pytest.approx(run.data.metrics["tune/suggested_lr"])
    assert "lr_find.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    children = [r for r in runs(client) if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
    assert [c.info.run_name for c in children] == ["lr_find"] and children[0].info.status == "FINISHED"
    assert math.isfinite(run.data.metrics["test/acc"])
