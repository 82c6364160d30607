"""DCGAN networks, the Fréchet distance, and GAN training end to end with what it leaves in MLflow."""

from pathlib import Path

import pytest
import torch
from torch import nn

from imgrec.errors import ConfigError
from imgrec.hub import load_net, read_checkpoint
from imgrec.models.dcgan import DCGAN, INIT_STD
from imgrec.pictures import image_grid
from imgrec.tasks.sample_quality import ClassifierFeatures, feature_stats, frechet_distance, make_inception_fid
from imgrec.train import build_datamodule, build_task, train
from tests.conftest import runs

SMALL = ["model.generator.width=8", "model.discriminator.width=8", "model.latent_dim=16", "task.fd_samples=64"]


# ----------------------------------------------------------------------------- networks


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32), (1, 32, 32), (3, 28, 28), (1, 8, 8)])
@pytest.mark.parametrize("conditional", [False, True])
def test_generator_and_discriminator_shapes(in_shape, conditional):
    gan = DCGAN(in_shape, num_classes=10, latent_dim=16, generator={"width": 8}, discriminator={"width": 8},
                conditional=conditional)
    labels = torch.tensor([0, 3, 9]) if conditional else None
    images = gan.generator(torch.randn(3, 16), labels)
    assert images.shape == (3, *in_shape)
    assert images.min() >= -1 and images.max() <= 1  # tanh
    assert gan.discriminator(images, labels).shape == (3,)  # one logit per image
    assert gan.generator.sample(4).shape == (4, *in_shape)  # a conditional sample() draws classes in turn


def test_architecture_follows_the_paper():
    gan = DCGAN((1, 28, 28), num_classes=10, generator={"width": 64}, discriminator={"width": 64})
    g_layers, d_layers = list(gan.generator.net), list(gan.discriminator.net)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in gan.modules())
    assert isinstance(g_layers[-1], nn.Tanh) and not isinstance(g_layers[-2], nn.BatchNorm2d)
    assert isinstance(d_layers[1], nn.LeakyReLU) and d_layers[1].negative_slope == 0.2  # no batch norm on input
    assert [m.out_channels for m in gan.discriminator.net if isinstance(m, nn.Conv2d)] == [64, 128, 256, 1]
    assert [m.out_channels for m in gan.generator.net if isinstance(m, nn.ConvTranspose2d)] == [256, 128, 64, 1]
    weights = torch.cat([m.weight.flatten() for m in gan.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(weights.std().item() - INIT_STD) < 0.002
    gammas = torch.cat([m.weight for m in gan.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(gammas.mean().item() - 1.0) < 0.01 and gammas.std().item() < 0.03


def test_conditioning_changes_the_output_and_labels_are_required():
    gan = DCGAN((1, 28, 28), num_classes=10, latent_dim=16, generator={"width": 8}, discriminator={"width": 8},
                conditional=True).eval()
    z = torch.randn(2, 16)
    assert not torch.allclose(gan.generator(z, torch.tensor([0, 0])), gan.generator(z, torch.tensor([1, 1])))
    with pytest.raises(ValueError, match="pass labels"):
        gan.generator(z)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"latent_dim": 0}, "latent_dim must be a positive integer"),
     ({"generator": {"width": 0}}, "model.generator.width"),
     ({"discriminator": {"depth": 3}}, "model.discriminator: unknown keys")],
)
def test_bad_model_values_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DCGAN((1, 28, 28), 10, **kwargs)


def test_image_grid_lays_images_out_row_by_row():
    images = torch.stack([torch.full((1, 2, 2), float(i)) for i in range(6)])
    grid = image_grid(images, columns=3, padding=1, fill=-1.0)
    assert grid.shape == (1, 2 * 4, 3 * 4)
    assert grid[0, 1, 1] == 0 and grid[0, 1, 5] == 1 and grid[0, 5, 1] == 3 and grid[0, 6, 10] == 5
    assert grid[0, 0, 0] == -1  # padding


# ----------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_of_identical_gaussians_is_zero():
    features = torch.randn(500, 8) @ torch.randn(8, 8)  # correlated features
    stats = feature_stats(features)
    assert frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_a_shifted_mean_is_the_squared_shift():
    features = torch.randn(500, 8) @ torch.randn(8, 8)
    shift = torch.tensor([3.0, -1.0, 0.5, 0.0, 2.0, 0.0, 0.0, 1.0])
    distance = frechet_distance(*feature_stats(features), *feature_stats(features + shift))
    assert distance == pytest.approx(float(shift @ shift), rel=1e-6)


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 0.0])  # singular b: still exact
    zero = torch.zeros(3)
    expected = float(((a.sqrt() - b.sqrt()) ** 2).sum())  # sum (sqrt a_i - sqrt b_i)^2 = 1 + 1 + 9
    assert frechet_distance(zero, torch.diag(a), zero, torch.diag(b)) == pytest.approx(expected, abs=1e-6)


def test_classifier_features_are_the_input_of_the_last_linear_layer():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    features, logits = ClassifierFeatures(net)(torch.randn(2, 1, 2, 2))
    assert features.shape == (2, 5) and logits.shape == (2, 3)
    assert torch.allclose(net[3](features), logits, atol=1e-6)


def test_inception_fid_is_skipped_with_a_warning_when_unavailable(monkeypatch, caplog):
    import torchmetrics.image.fid

    def offline(*args, **kwargs):
        raise ModuleNotFoundError("FrechetInceptionDistance needs torch-fidelity")

    monkeypatch.setattr(torchmetrics.image.fid, "FrechetInceptionDistance", offline)
    with caplog.at_level("WARNING"):
        assert make_inception_fid() is None
    assert "task.inception_fid" in caplog.text and "torch-fidelity" in caplog.text


# ----------------------------------------------------------------------------- training


def test_dcgan_trains_and_logs_losses_samples_and_a_loadable_generator(make_cfg, mlflow_client, idx_root):
    # A cosine schedule over the whole run (4 batches) must end both networks' learning rates at 0.
    metric = train(make_cfg("model=dcgan", "data=mnist", f"data.root={idx_root}", *SMALL, "scheduler=cosine"))
    assert metric is None  # optimized_metric is val/fd_classifier, which needs task.fd_classifier
    (run,) = runs(mlflow_client)
    assert run.info.status == "FINISHED" and run.info.run_name == "dcgan-mnist"
    assert {"train/loss_d", "train/loss_g", "train/d_real", "train/d_fake", "val/d_real", "test/d_real"} <= set(
        run.data.metrics
    )
    assert "val/fd_classifier" not in run.data.metrics
    samples = [a.path for a in mlflow_client.list_artifacts(run.info.run_id, "samples")]
    assert samples == ["samples/epoch_000.png"]
    png = Path(mlflow_client.download_artifacts(run.info.run_id, "samples/epoch_000.png"))
    assert png.read_bytes()[:4] == b"\x89PNG"

    # What GAN augmentation will do: rebuild the generator from the checkpoint and call it.
    gan, spec = load_net(f"runs:/{run.info.run_id}")
    assert isinstance(gan, DCGAN) and spec.data == "mnist" and spec.run_id == run.info.run_id
    assert gan.generator(torch.randn(2, 16)).shape == (2, 1, 28, 28)

    checkpoint = read_checkpoint(Path(run.data.tags["imgrec.best_checkpoint"]))
    final_lrs = [state["param_groups"][0]["lr"] for state in checkpoint["optimizer_states"]]
    assert len(final_lrs) == 2 and max(final_lrs) < 1e-9  # generator's and discriminator's, stepped manually


def test_conditional_dcgan_is_measured_in_a_classifier_feature_space(make_cfg, mlflow_client, idx_root, tmp_path):
    train(make_cfg("data=mnist", f"data.root={idx_root}", "model=mlp"))
    (classifier_run,) = runs(mlflow_client)
    overrides = ["model=dcgan", "data=mnist", f"data.root={idx_root}", *SMALL, "model.conditional=true",
                 f"task.fd_classifier=runs:/{classifier_run.info.run_id}", "trainer.max_epochs=2"]
    cfg = make_cfg(*overrides)
    metric = train(cfg)
    gan_run = runs(mlflow_client)[-1]
    assert gan_run.info.status == "FINISHED"
    # What the task declares it logs (checkpoint monitors are checked against it) is what it logged.
    declared = build_task(cfg, build_datamodule(cfg)).logged_metrics()
    assert {m for m in gan_run.data.metrics if m.startswith(("train/", "val/", "test/"))} == declared
    history = mlflow_client.get_metric_history(gan_run.info.run_id, "val/fd_classifier")
    assert len(history) == 2 and all(h.value > 0 for h in history)  # one per epoch
    assert metric == pytest.approx(history[-1].value, rel=1e-5)  # optimized_metric
    assert {"val/cond_acc", "test/fd_classifier", "test/cond_acc"} <= set(gan_run.data.metrics)
    assert 0.0 <= gan_run.data.metrics["val/cond_acc"] <= 1.0
    # The kept checkpoint has the lowest val/fd_classifier (the default monitor, val/acc, is a classifier's).
    best_epoch = min(range(2), key=lambda epoch: history[epoch].value)
    assert Path(gan_run.data.tags["imgrec.best_checkpoint"]).name == f"epoch_{best_epoch:03d}.ckpt"

    # A classifier of other images measures nothing: one-line errors naming the key.
    fashion = ["model=dcgan", "data=fashion_mnist", f"data.root={idx_root}", *SMALL]  # same shape, other dataset
    with pytest.raises(ConfigError, match="it was trained on mnist, but this GAN trains on fashion_mnist") as error:
        train(make_cfg(*fashion, f"task.fd_classifier=runs:/{classifier_run.info.run_id}"))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="task.fd_classifier: no such checkpoint file"):
        train(make_cfg(*fashion, f"task.fd_classifier={tmp_path}/missing.ckpt"))
