"""Common corruptions (imgrec.data.corruptions) and `imgrec corrupt`: accuracy per corruption and severity, CE against
a reference, the report's pictures, and the corrupted sets saved in the dataset's own format."""

import csv
import json

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from imgrec.data import catalog
from imgrec.data.corruptions import SEVERITIES, corrupt, corruptions_for, disk, gaussian_blur_of
from tests.conftest import cli, model_job_args, runs

# -- the corruptions ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (6, 3, 32, 32)])
def test_every_corruption_keeps_shape_and_range_is_seeded_and_grows_with_severity(shape):
    # smooth images, as photographs are (on pixel noise any shift changes everything)
    images = gaussian_blur_of(torch.rand(*shape, generator=torch.Generator().manual_seed(0)), 2.0)
    images = (images - images.amin()) / (images.amax() - images.amin())
    for name in corruptions_for(shape[1]):
        changes = []
        for severity in SEVERITIES:
            out = corrupt(images, name, severity, torch.Generator().manual_seed(1))
            assert out.shape == images.shape and out.dtype == images.dtype, name
            assert 0 <= float(out.min()) and float(out.max()) <= 1, name
            assert torch.equal(out, corrupt(images, name, severity, torch.Generator().manual_seed(1))), name
            changes.append(float((out - images).abs().mean()))
        assert changes[-1] > 0.003, f"{name} at severity 5 barely changes the images"
        if name != "elastic_transform":  # its levels trade a large affine part (1) for local displacement (5)
            assert changes[-1] >= changes[0] - 0.02, f"{name}: severity 5 changes less than severity 1 ({changes})"


def test_noise_and_photometric_corruptions_follow_the_reference_formulas():
    x = torch.full((2, 3, 8, 8), 0.5)
    x[1] = torch.linspace(0.1, 0.9, 3 * 64).view(3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    noisy = corrupt(x, "gaussian_noise", 5, generator)
    assert float((noisy - x).std()) == pytest.approx(0.10, rel=0.2)  # sigma 0.10 at severity 5
    low = corrupt(x, "contrast", 5, generator)  # (x - mean) * 0.15 + mean, per channel
    assert torch.allclose(low, (x - x.mean((2, 3), keepdim=True)) * 0.15 + x.mean((2, 3), keepdim=True))
    bright = corrupt(x, "brightness", 1, generator)  # HSV value + 0.05: grey 0.5 -> 0.55
    assert torch.allclose(bright[0], torch.full((3, 8, 8), 0.55))
    hit = corrupt(torch.full((50, 1, 28, 28), 0.5), "impulse_noise", 5, generator)  # 7% of the values to 0 or 1
    assert float((hit != 0.5).float().mean()) == pytest.approx(0.07, abs=0.01)
    assert set(hit.unique().tolist()) == {0.0, 0.5, 1.0}


def test_blur_kernels_are_the_references():
    # defocus at severity 1-3 (radius < 1): the disk is one pixel, so the kernel is a 3 x 3 Gaussian of the alias blur
    kernel = disk(0.3, 0.4)
    assert kernel.shape == (17, 17) and float(kernel.sum()) == pytest.approx(1, abs=1e-6)
    assert torch.count_nonzero(kernel) == 9 and float(kernel[8, 8]) == pytest.approx(
        float(torch.exp(torch.tensor(0.0)) / (1 + 2 * torch.exp(torch.tensor(-1 / (2 * 0.4**2)))) ** 2), rel=1e-5)
    from scipy.ndimage import gaussian_filter

    image = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    ours = gaussian_blur_of(image, 1.3)
    theirs = gaussian_filter(image[0, 0].numpy().astype(np.float64), 1.3, mode="nearest", truncate=4.0)
    assert np.allclose(ours[0, 0].numpy(), theirs, atol=1e-5)


def test_geometric_corruptions_move_a_dot_where_mnist_c_moves_it():
    dot = torch.zeros(1, 1, 28, 28)
    dot[0, 0, 14, 20] = 1.0
    moved = corrupt(dot, "translate", 3, torch.Generator().manual_seed(0))  # 3 px each way, signs drawn
    (row, col), = torch.nonzero(moved[0, 0] > 0.5).tolist()
    assert abs(row - 14) == 3 and abs(col - 20) == 3
    zoomed = corrupt(dot, "zoom", 5, torch.Generator().manual_seed(0))  # half the size about the centre
    assert torch.nonzero(zoomed[0, 0] > 0.2).float().mean(0)[1] == pytest.approx(14 + (20.5 - 14) / 2, abs=1)


# -- the verb -----------------------------------------------------------------------------------------------------


def test_corrupt_on_gray_and_rgb_models_writes_its_report(trained_classifier, capsys):
    c = trained_classifier
    report = cli("corrupt", *model_job_args(c), "corruptions=[gaussian_noise,motion_blur,jpeg_compression,rotate]",
                 "severity=[1,5]", "n=24", f"reference={c['uri']}")
    folder = c["home"] / "outputs" / "corrupt" / c["run"].info.run_id
    with (folder / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {"corruption", "severity", "n", "acc"} <= set(rows[0])
    assert (rows[0]["corruption"], rows[0]["severity"]) == ("clean", "0")
    assert [(r["corruption"], r["severity"]) for r in rows[1:3]] == [("gaussian_noise", "1"), ("gaussian_noise", "5")]
    assert len(rows) == 1 + 4 * 2 and all(r["n"] == "24" for r in rows)
    for name in ("heatmap.png", "grid.png", "report.md", "per_corruption.csv"):
        assert (folder / name).stat().st_size > 0
    # the model is its own reference: every CE and relative CE is 1, where defined
    assert report.metrics["corrupt/mce"] == pytest.approx(1.0)
    mean = np.mean([float(r["acc"]) for r in rows[1:]])
    assert report.metrics["corrupt/mca"] == pytest.approx(mean)
    (child,) = [r for r in runs(MlflowClient(c["tracking"])) if r.data.tags.get("imgrec.role") == "corrupt"]
    assert child.data.tags["mlflow.parentRunId"] == c["run"].info.run_id
    assert child.data.metrics["corrupt/clean_acc"] == pytest.approx(float(rows[0]["acc"]))
    assert report.where() in capsys.readouterr().out


def test_saved_corrupted_sets_are_read_by_evaluate(trained_classifier, tmp_path):
    c = trained_classifier
    saved = tmp_path / "dataset-c"
    cli("corrupt", *model_job_args(c), "corruptions=[pixelate]", "severity=[2]", "n=20", f"save={saved}")
    manifest = json.loads((saved / "manifest.json").read_text())
    (entry,) = manifest["sets"]
    assert (entry["corruption"], entry["severity"], manifest["test_images"]) == ("pixelate", 2, 20)
    files = catalog.load_dataset(c["data"], entry["root"], download=False)
    original = catalog.load_dataset(c["data"], str(c["data_root"]), download=False)
    assert len(files.test_labels) == 20 and np.array_equal(files.test_labels, original.test_labels[:20])
    expected = corrupt(torch.from_numpy(original.test_images[:20]).float() / 255, "pixelate", 2, torch.Generator())
    assert np.array_equal(files.test_images, (expected * 255).round().to(torch.uint8).numpy())
    assert np.array_equal(files.train_images, original.train_images)  # the clean training files, linked
    report = cli("evaluate", *model_job_args(c), f"data={c['data']}", f"data.root={entry['root']}")
    assert report.metrics["test/acc"] >= 0


@pytest.mark.parametrize("args, message", [
    (["corruptions=[snow_storm]"], "corruptions: unknown ['snow_storm']; the corruptions are gaussian_noise, "),
    (["severity=[0,6]"], "severity: integers from 1 to 5, got"),
    (["n=0"], "n must be a positive integer"),
    (["data=cifar10"], "data=cifar10 has 3x32x32 images; the model takes 1x28x28"),
])
def test_bad_input_is_one_line(gray_classifier, args, message):
    with pytest.raises(SystemExit) as err:
        cli("corrupt", *model_job_args(gray_classifier), *args)
    assert str(err.value.code).startswith(f"error: {message}") and "\n" not in str(err.value.code)


# -- training that generalizes: AugMix and noise ---------------------------------------------------------------------


def test_augmix_mixes_per_image_within_range_with_the_references_operations():
    from imgrec.data.augmix import AUGMIX_OPERATIONS, augmix

    assert not {"brightness", "contrast", "color", "sharpness"} & set(AUGMIX_OPERATIONS)  # they overlap the test set
    one = gaussian_blur_of(torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0)), 1.0)
    batch = one.expand(32, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    mixed = augmix(batch)
    assert mixed.shape == batch.shape and 0 <= float(mixed.min()) and float(mixed.max()) <= 1
    assert len({tuple(m.flatten().tolist()) for m in mixed}) == 32  # every image its own chains and weights
    torch.manual_seed(0)
    assert torch.equal(augmix(batch), mixed)


def test_the_jensen_shannon_loss_is_augmixs():
    from imgrec.tasks.classification import jensen_shannon

    generator = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(5, 4, generator=generator) for _ in range(3))
    p = [x.softmax(1) for x in (a, b, c)]
    m = ((p[0] + p[1] + p[2]) / 3).clamp(1e-7, 1)
    expected = sum((q * (q.log() - m.log())).sum(1).mean() for q in p) / 3  # the mean of KL(p_i || M)
    assert float(jensen_shannon(a, b, c)) == pytest.approx(float(expected), rel=1e-5)
    assert float(jensen_shannon(a, a, a)) == pytest.approx(0, abs=1e-6)


def test_the_jensen_shannon_gradient_stays_finite_when_a_probability_underflows():
    """Logits 120 apart: softmax gives an exact 0, whose log made the gradient NaN (an AugMix run diverged so)."""
    from imgrec.tasks.classification import jensen_shannon

    confident = torch.tensor([[120.0, 0.0, 0.0]], requires_grad=True)
    unsure = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    assert float(confident.softmax(1).min()) == 0
    jensen_shannon(confident, unsure, unsure).backward()
    assert torch.isfinite(confident.grad).all() and torch.isfinite(unsure.grad).all()


def test_noise_augmentation_draws_a_std_per_image_in_pixel_units():
    from imgrec.data.augment import gaussian_noise

    images = torch.full((4000, 1, 8, 8), 0.5)
    torch.manual_seed(0)
    per_image = gaussian_noise(images, 0.2).flatten(1).std(1)
    assert float(per_image.max()) < 0.3 and float(per_image.min()) < 0.02  # U(0, 0.2): some nearly clean
    assert float(per_image.pow(2).mean()) == pytest.approx(0.2**2 / 3, rel=0.1)
    assert gaussian_noise(images, 0.0) is images


def test_an_augmix_batch_holds_the_images_and_two_views_and_the_loss_adds_their_consistency(idx_root):
    from imgrec.data.builtin import BuiltinImages
    from imgrec.models.cnn import ConvNet
    from imgrec.tasks.classification import AUGMIX_CONSISTENCY_WEIGHT, ClassificationTask, jensen_shannon

    datamodule = BuiltinImages("mnist", str(idx_root), download=False, batch_size=8, val_size=32,
                                 augment={"hflip": True, "augmix": True})
    datamodule.setup("fit")
    datamodule.trainer = type("Training", (), {"training": True, "current_epoch": 0, "max_epochs": 1})()
    images, labels = next(iter(datamodule.train_dataloader()))
    torch.manual_seed(0)
    views, _ = datamodule.on_after_batch_transfer((images, labels), 0)
    assert views.shape == (24, 1, 28, 28)
    torch.manual_seed(0)
    plain = datamodule.train_views(images.float() / 255)
    assert torch.equal(views[:8], plain)  # the batch as flipped, then its AugMix views

    net = ConvNet((1, 28, 28), 10, channels=(4,), fc=())
    task = ClassificationTask(net, torch.optim.Adam, None, 10)
    task.augmix = True
    loss, logits, _ = task.model_step((views, labels), "train")
    with torch.no_grad():
        clean, first, second = net(views).float().chunk(3)
    expected = torch.nn.functional.cross_entropy(clean, labels) + AUGMIX_CONSISTENCY_WEIGHT * jensen_shannon(
        clean, first, second)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5) and logits.shape == (8, 10)


@pytest.mark.parametrize("data", ["mnist", "cifar10"])
def test_augmix_and_noise_training_and_the_corruption_callback_on_gray_and_rgb(make_cfg, mlflow_client, idx_root,
                                                                                cifar10_root, data):
    from imgrec import hub
    from imgrec.train import train

    root = idx_root if data == "mnist" else cifar10_root
    train(make_cfg(f"data={data}", f"data.root={root}", "data.augment.augmix=true", "data.augment.noise=0.1",
                   "callbacks.corruptions.n=16", "callbacks.corruptions.corruptions=[fog,zoom,jpeg_compression]",
                   "trainer.precision=32"))
    (run,) = runs(mlflow_client)
    metrics = run.data.metrics
    assert run.info.status == "FINISHED" and "test/acc" in metrics
    assert {"test/corruption/clean", "test/corruption/fog", "test/corruption/zoom",
            "test/corruption_acc"} <= set(metrics)
    # the callback's measure is the verb's: the same 16 images under the same draws, through the same weights
    model = hub.load_model(f"runs:/{run.info.run_id}", mlflow_client.tracking_uri)
    from imgrec.data.corruptions import generator_for
    from imgrec.data.trained import datamodule_of

    own = datamodule_of(model.spec)
    own.load()
    pixels, labels = own.test_pixels(16)
    with torch.no_grad():
        fog = np.mean([float((model(corrupt(pixels, "fog", s, generator_for(0, "fog", s))).argmax(1)
                              == labels[:16]).float().mean()) for s in SEVERITIES])
    assert metrics["test/corruption/fog"] == pytest.approx(fog)


@pytest.mark.parametrize("overrides, message", [
    (["model=autoencoder", "data.augment.augmix=true"], "data.augment.augmix: its consistency loss is a classifier's"),
    (["data.augment.augmix=true", "task.adversarial.method=pgd"], "data.augment.augmix and task.adversarial.method"),
    (["callbacks.corruptions.corruptions=[hail]"], "callbacks: callbacks.corruptions: n >= 0"),
])
def test_bad_training_settings_are_one_line_errors(make_cfg, mlflow_client, idx_root, overrides, message):
    from imgrec.errors import ConfigError
    from imgrec.train import train

    with pytest.raises(ConfigError, match=message) as err:
        train(make_cfg("data=mnist", f"data.root={idx_root}", *overrides))
    assert "\n" not in str(err.value) and runs(mlflow_client) == []


def test_corruption_errors_are_hendrycks_and_dietterichs():
    from imgrec.robust.corruption_eval import corruption_errors, mean_errors, relative_to

    mine, reference = {"fog": 0.7, "zoom": 0.5}, {"fog": 0.6, "zoom": 0.5}
    errors = corruption_errors(mine, 0.9, reference, 0.8)
    assert errors["fog"]["ce"] == pytest.approx(0.3 / 0.4) and errors["zoom"]["ce"] == pytest.approx(1.0)
    assert errors["fog"]["relative_ce"] == pytest.approx(0.2 / 0.2) and errors["zoom"]["relative_ce"] == pytest.approx(0.4 / 0.3)
    assert mean_errors(errors) == {"mce": pytest.approx(0.875), "relative_mce": pytest.approx((1 + 4 / 3) / 2)}
    logged = {"test/corruption/clean": 0.9, "test/corruption/fog": 0.7, "test/corruption/zoom": 0.5, "test/acc": 0.91}
    against = {"test/corruption/clean": 0.8, "test/corruption/fog": 0.6, "test/corruption/zoom": 0.5}
    assert relative_to(logged, against) == {"test/mce": pytest.approx(0.875), "test/relative_mce": pytest.approx(7 / 6)}
    assert relative_to(logged, {"test/acc": 0.9}) == {}  # the reference measured no corruption
