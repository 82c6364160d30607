"""The autoencoder family: the network's shapes, denoising, the latent probes, and a tracked run end to end."""

from pathlib import Path

import pytest
import torch
from torch import nn

from imgrec.data.pixels import Normalization
from imgrec.errors import ConfigError
from imgrec.models.autoencoder import ConvAutoencoder
from imgrec.tasks.autoencoding import (
    AutoencodingTask,
    corrupt,
    knn_accuracy,
    linear_probe_accuracy,
)
from imgrec.train import train
from tests.conftest import runs


@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32), (1, 32, 32), (3, 28, 28)])
def test_reconstruction_has_the_input_shape_and_the_latent_has_latent_dim(in_shape):
    net = ConvAutoencoder(in_shape, num_classes=10, latent_dim=16, channels=[8, 16])
    images = torch.randn(3, *in_shape)
    assert net(images).shape == (3, *in_shape)
    assert net.encode(images).shape == (3, 16)
    assert net.encoder(images).shape == (3, 16)
    # transfer learning takes `encoder` whole: it must end in the latent Linear
    assert isinstance(net.encoder[-1], nn.Linear) and net.encoder[-1].out_features == 16


@pytest.mark.parametrize("kwargs, message", [({"latent_dim": 0}, "latent_dim"), ({"channels": []}, "channels")])
def test_bad_network_settings_are_value_errors_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvAutoencoder((1, 28, 28), 10, **kwargs)


def make_task(**config) -> AutoencodingTask:
    net = ConvAutoencoder((1, 28, 28), 10, latent_dim=8, channels=[4, 8])
    task = AutoencodingTask(net, optimizer=torch.optim.Adam, scheduler=None, num_classes=10, **config)
    task.normalization = Normalization([0.3], [0.5])
    return task


def test_corruption_is_gaussian_with_the_given_std_in_pixel_units():
    pixels = torch.rand(64, 3, 16, 16)
    assert corrupt(pixels, 0.0) is pixels
    noise = corrupt(pixels, 0.2) - pixels
    per_channel_std = noise.transpose(0, 1).flatten(1).std(dim=1)
    assert torch.allclose(per_channel_std, torch.full((3,), 0.2), rtol=0.05)


def test_denoising_corrupts_the_encoder_input_but_not_the_target():
    clean = torch.rand(4, 1, 28, 28) * 1.2 - 0.1  # augmentation may step slightly outside [0, 1]
    plain, denoising = make_task(), make_task(denoise_std=0.3)
    plain_inputs, plain_target = plain.inputs_and_targets(clean)
    noisy_inputs, noisy_target = denoising.inputs_and_targets(clean)
    expected_target = clean.clamp(0, 1)
    assert torch.equal(plain_inputs, clean)
    assert not torch.allclose(noisy_inputs, clean, atol=0.1)
    assert torch.equal(noisy_target, expected_target) and torch.equal(plain_target, expected_target)

    # the step really feeds the corrupted images to the network and scores against the clean ones
    seen = []
    denoising.net.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    torch.manual_seed(0)
    loss = denoising.model_step((clean, torch.zeros(4, dtype=torch.long)), "train")
    assert not torch.allclose(seen[0], denoising.normalize(clean), atol=0.1)  # normalized, and noisy
    with torch.no_grad():
        expected_loss = torch.nn.functional.mse_loss(denoising.net(seen[0]).sigmoid(), expected_target)
    assert torch.allclose(loss, expected_loss)


def test_bad_task_settings_are_value_errors_naming_the_key():
    bad = [({"loss": "l1"}, "task.loss"), ({"probe": "svm"}, "task.probe"),
           ({"denoise_std": -0.1}, "task.denoise_std"), ({"probe_train_size": 0}, "task.probe_train_size")]
    for config, key in bad:
        with pytest.raises(ValueError, match=key):
            make_task(**config)
    with pytest.raises(ValueError, match="encode"):  # task=autoencoding with a classifier
        AutoencodingTask(nn.Linear(2, 2), torch.optim.Adam, None, num_classes=2)


def separable_latents(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes, each a cluster around its own direction in 16-d space, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(16)[:4] * 4.0
    labels = torch.arange(n) % 4
    return centres[labels] + torch.randn(n, 16, generator=generator), labels


@pytest.mark.parametrize("probe", [linear_probe_accuracy, knn_accuracy])
def test_probes_read_classes_off_separable_latents_and_not_off_noise(probe):
    train_latents, train_labels = separable_latents(400, seed=0)
    test_latents, test_labels = separable_latents(200, seed=1)
    assert probe(train_latents, train_labels, test_latents, test_labels) > 0.95
    shuffled = train_labels[torch.randperm(400, generator=torch.Generator().manual_seed(2))]
    assert probe(train_latents, shuffled, test_latents, test_labels) < 0.5  # chance is 0.25


def test_model_autoencoder_alone_selects_its_task_and_metric(make_cfg):
    cfg = make_cfg("model=autoencoder")
    assert cfg.task._target_ == "imgrec.tasks.autoencoding.AutoencodingTask"
    assert cfg.optimized_metric == "val/psnr_best"


def test_model_autoencoder_sets_the_checkpoint_monitor_in_the_config(make_cfg):
    cfg = make_cfg("model=autoencoder")
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == ("val/loss", "min")


def test_a_classifier_with_task_autoencoding_is_a_one_line_error(make_cfg, idx_root):
    with pytest.raises(ConfigError, match="task: .*encode"):
        train(make_cfg("model=cnn", "task=autoencoding", "data=mnist", f"data.root={idx_root}"))


@pytest.mark.parametrize("task", [[], ["task.loss=bce", "task.denoise_std=0.2", "task.probe=knn"]])
def test_an_autoencoder_run_logs_image_metrics_reconstructions_and_a_probe(make_cfg, mlflow_client, idx_root, task):
    metric = train(make_cfg("model=autoencoder", "data=mnist", f"data.root={idx_root}", *task))
    assert isinstance(metric, float)
    (run,) = runs(mlflow_client)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert metric == pytest.approx(metrics["val/psnr_best"])
    assert {"train/loss", "val/loss", "val/mse", "val/psnr", "val/ssim", "test/psnr", "test/ssim"} <= set(metrics)
    assert 0.0 <= metrics["test/probe_acc"] <= 1.0
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "reconstructions")}
    assert artifacts == {"reconstructions/epoch_000.png"}
    # the classification report stays silent: there is no test_report on this task
    assert "confusion_matrix.png" not in {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    run_dir = Path(run.data.tags["hydra.output_dir"])
    assert (run_dir / "reconstructions" / "epoch_000.png").stat().st_size > 1000
    best = torch.load(run.data.tags["imgrec.best_checkpoint"], map_location="cpu", weights_only=False)
    (checkpoint_state,) = [key for key in best["callbacks"] if key.startswith("ModelCheckpoint")]
    assert "'monitor': 'val/loss'" in checkpoint_state and "'mode': 'min'" in checkpoint_state
