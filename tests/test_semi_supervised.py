"""Less data: a labeled subset (data.labels_per_class), semi-supervised training (FixMatch, pseudo-label) with its
strong augmentation (imgrec.data.randaugment), and the weight average it is evaluated with (task.ema)."""

import csv
import io
import math

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image, ImageEnhance

from imgrec import hub
from imgrec.data import catalog
from imgrec.data.builtin import BuiltinImages
from imgrec.data.datamodule import EpochShuffle
from imgrec.data.randaugment import OPERATIONS, rand_augment
from imgrec.data.splits import split_dataset
from imgrec.data.trained import datamodule_of
from imgrec.errors import ConfigError
from imgrec.hub import read_checkpoint, resolve_checkpoint
from imgrec.train import train
from tests.conftest import FAST, runs, train_py

# -- the labeled subset ---------------------------------------------------------------------------------------


def file_index(images: torch.Tensor, files) -> list[int]:
    """Where each image is in the dataset's training file (every image of the test data is unique)."""
    where = {bytes(image): i for i, image in enumerate(files.train_images)}
    return [where[bytes(image.numpy())] for image in images]


def test_the_labeled_subset_is_stratified_fixed_by_the_split_seed_and_apart_from_validation(idx_root):
    splits = split_dataset(catalog.read_parts("mnist", str(idx_root), False), 32, split_seed=0, labels_per_class=5)
    files = catalog.load_dataset("mnist", str(idx_root), False)
    assert torch.bincount(splits.train.labels).tolist() == [5] * 10
    labeled, unlabeled, val = (file_index(part.gather(), files) for part in (splits.train, splits.unlabeled, splits.val))
    assert labeled == splits.labeled_positions.tolist()
    assert sorted(labeled + unlabeled + val) == list(range(256))  # a partition of the training file
    assert splits.train.labels.tolist() == files.train_labels[labeled].tolist()
    assert splits.unlabeled.labels.tolist() == files.train_labels[unlabeled].tolist()  # kept for diagnostics

    again = split_dataset(catalog.read_parts("mnist", str(idx_root), False), 32, split_seed=0, labels_per_class=5)
    other = split_dataset(catalog.read_parts("mnist", str(idx_root), False), 32, split_seed=1, labels_per_class=5)
    assert torch.equal(again.labeled_positions, splits.labeled_positions)
    assert not torch.equal(other.labeled_positions, splits.labeled_positions)
    torch.manual_seed(123)  # the run's seed does not pick the labeled images
    assert torch.equal(split_dataset(catalog.read_parts("mnist", str(idx_root), False), 32, 0, labels_per_class=5).labeled_positions,
                       splits.labeled_positions)
    # normalization: every training image counts, labeled or not (a supervised run on 1,000 labels and FixMatch on
    # the same split see the same pixels)
    whole = split_dataset(catalog.read_parts("mnist", str(idx_root), False), 32, split_seed=0)
    assert torch.allclose(splits.normalization.mean, whole.normalization.mean)


def test_an_epoch_of_a_labeled_subset_has_the_steps_of_the_whole_split(idx_root):
    datamodule = BuiltinImages("mnist", str(idx_root), download=False, batch_size=16, val_size=32,
                                 labels_per_class=3)
    datamodule.setup("fit")
    assert len(datamodule.train_dataloader()) == math.ceil((256 - 32) / 16)
    datamodule.unlabeled_ratio = 2
    datamodule.train_set = None
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batch = next(iter(loader))[0]
    assert len(loader) == math.ceil((256 - 32) / 16)
    assert len(batch["labeled"][1]) == 16 and len(batch["unlabeled"][1]) == 32


def test_epoch_shuffle_passes_over_the_images_again_in_new_orders():
    sampler = EpochShuffle(10, seed=0, length=25)
    order = list(sampler)
    assert len(order) == len(sampler) == 25
    assert sorted(order[:10]) == sorted(order[10:20]) == list(range(10)) and order[:10] != order[10:20]
    assert list(EpochShuffle(10, seed=0, length=25, stream=1)) != order
    assert list(EpochShuffle(10, seed=0)) == order[:10]  # one pass: the order a plain run had


@pytest.mark.parametrize("overrides, message", [
    (["data.labels_per_class=0"], "data.labels_per_class must be a positive integer or null"),
    (["data.labels_per_class=5", "data.train_size=100"], "both pick the labeled training images: set one"),
    (["task=semi_supervised"], "task=semi_supervised learns from unlabeled images too: set data.labels_per_class"),
    (["model=autoencoder", "data.labels_per_class=5"], "task=autoencoding trains on every training image"),
    (["data.labels_per_class=500"], "data.labels_per_class=500 exceeds the smallest class's"),
    (["task=semi_supervised", "data.labels_per_class=5", "task.method=mixmatch"], "task.method: unknown 'mixmatch'"),
])
def test_bad_labeled_subsets_are_one_line_errors_and_no_run_is_created(make_cfg, mlflow_client, idx_root, overrides,
                                                                      message):
    with pytest.raises(ConfigError, match=message) as err:
        train(make_cfg("data=mnist", f"data.root={idx_root}", *overrides))
    assert "\n" not in str(err.value) and runs(mlflow_client) == []


# -- semi-supervised training ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model, data, method", [("cnn", "mnist", "fixmatch"), ("lenet5", "cifar10", "pseudo_label"),
                                                 ("gru", "cifar10", "fixmatch")])
def test_semi_supervised_training_on_gray_and_rgb_images(make_cfg, mlflow_client, idx_root, cifar10_root, model, data,
                                                         method):
    root = idx_root if data == "mnist" else cifar10_root
    per_class = 3
    # threshold 0: every pseudo-label counts, so the diagnostics are logged; fp32: the test below is exact
    train(make_cfg(f"model={model}", f"data={data}", f"data.root={root}", "task=semi_supervised",
                   f"task.method={method}", f"data.labels_per_class={per_class}", "task.threshold=0.0",
                   "task.unlabeled_ratio=2", "trainer.precision=32"))
    (run,) = runs(mlflow_client)
    metrics, client = run.data.metrics, mlflow_client
    assert run.info.status == "FINISHED" and run.data.tags["imgrec.choice.task"] == "semi_supervised"
    assert metrics["train/mask_rate"] == 1.0 and 0 <= metrics["train/pseudo_label_acc"] <= 1
    assert {"train/loss_labeled", "train/loss_unlabeled", "test/acc"} <= set(metrics)
    files = catalog.load_dataset(data, str(root), False)
    assert metrics["data/labeled_images"] == 10 * per_class
    assert metrics["data/unlabeled_images"] == len(files.train_labels) - 32 - 10 * per_class  # FAST: 32 to validate
    text = client.download_artifacts(run.info.run_id, "labeled_images.csv")
    rows = list(csv.DictReader(io.StringIO(open(text).read())))
    assert len(rows) == 10 * per_class
    assert all(int(r["label"]) == files.train_labels[int(r["index"])] for r in rows)

    # Evaluated with the weight average: the checkpoint holds it, and the test metrics are its
    uri = f"runs:/{run.info.run_id}"
    checkpoint = read_checkpoint(resolve_checkpoint(uri, client.tracking_uri))
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged if k.startswith("net."))
    model_of = hub.load_model(uri, client.tracking_uri)
    test = datamodule_of(model_of.spec, str(root))
    test.load()
    images, labels = test.test_pixels()
    with torch.no_grad():
        probs = model_of(images).softmax(1)
    kept = np.load(client.download_artifacts(run.info.run_id, "test_predictions.npz"))
    assert np.array_equal(kept["pred"], probs.argmax(1).numpy())
    assert np.allclose(kept["prob"].astype(np.float32), probs.max(1).values.numpy(), atol=2e-3)
    assert metrics["test/acc"] == pytest.approx(float((probs.argmax(1) == labels).float().mean()))


@pytest.mark.slow
def test_semi_supervised_training_under_two_process_ddp_logs_one_run(tmp_path, idx_root):
    done = train_py("trainer=ddp_cpu", "task=semi_supervised", "data.labels_per_class=3", "task.threshold=0.0",
                    "task.unlabeled_ratio=2", f"data.root={idx_root}", "data=mnist", *FAST, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db"))
    assert run.info.status == "FINISHED" and run.data.params["trainer.strategy"] == "ddp"
    assert run.data.metrics["train/mask_rate"] == 1.0 and run.data.metrics["data/labeled_images"] == 30


# -- the strong augmentation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_rand_augment_keeps_shape_and_range_and_draws_per_image(channels):
    batch = torch.rand(1, channels, 28, 28, generator=torch.Generator().manual_seed(0)).expand(64, -1, -1, -1)
    torch.manual_seed(0)
    out = rand_augment(batch, n=2, magnitude=10)
    assert out.shape == batch.shape and out.dtype == batch.dtype and 0 <= out.min() and out.max() <= 1
    distinct = {tuple(image.flatten().tolist()) for image in out}
    assert len(distinct) > 20  # the same image, augmented differently in one batch
    torch.manual_seed(0)
    assert torch.equal(rand_augment(batch, n=2, magnitude=10), out)  # torch's generator decides
    assert not torch.equal(rand_augment(batch, n=2, magnitude=10), out)


def pil_of(image: torch.Tensor) -> Image.Image:
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def tensor_of(picture: Image.Image, channels: int) -> torch.Tensor:
    array = np.asarray(picture, dtype=np.float32) / 255
    return torch.from_numpy(array).unsqueeze(0) if channels == 1 else torch.from_numpy(array).permute(2, 0, 1)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name, enhancer", [("brightness", ImageEnhance.Brightness), ("color", ImageEnhance.Color),
                                            ("contrast", ImageEnhance.Contrast),
                                            ("sharpness", ImageEnhance.Sharpness)])
def test_enhancements_are_pils(channels, name, enhancer):
    """RandAugment's enhancement operations as PIL computes them (what FixMatch's RandAugment calls), up to 8-bit
    rounding; sharpness away from the border, which PIL leaves alone."""
    generator = torch.Generator().manual_seed(0)
    images = (torch.randint(0, 256, (4, channels, 16, 16), generator=generator).float() / 255)
    strength = torch.tensor([-1.0, -0.4, 0.3, 1.0])
    ours = OPERATIONS[name](images, strength)
    for image, s, mine in zip(images, strength, ours):
        theirs = tensor_of(enhancer(pil_of(image)).enhance(float(1 + 0.9 * s)), channels)
        inner = (slice(None), slice(1, -1), slice(1, -1))
        tolerance = 3 / 255 if name == "contrast" else 1.5 / 255  # PIL rounds the mean grey to a level
        assert torch.allclose(mine[inner], theirs[inner], atol=tolerance), f"{name} at strength {float(s)}"


def test_geometric_operations_move_the_image_as_said():
    image = torch.zeros(1, 1, 20, 20)
    image[0, 0, 10, 10] = 1.0
    moved = OPERATIONS["translate_x"](image, torch.tensor([0.5]))  # 0.3 * 0.5 of the side: 3 px right
    assert torch.nonzero(moved[0, 0] > 0.5).tolist() == [[10, 13]]
    down = OPERATIONS["translate_y"](image, torch.tensor([-0.5]))
    assert torch.nonzero(down[0, 0] > 0.5).tolist() == [[7, 10]]
    for name in ("rotate", "shear_x", "shear_y", "translate_x"):  # strength 0: nothing moves
        assert torch.allclose(OPERATIONS[name](image, torch.tensor([0.0])), image, atol=1e-5)
    turned = OPERATIONS["rotate"](torch.eye(20).view(1, 1, 20, 20), torch.tensor([1.0]))  # 30 degrees
    assert not torch.allclose(turned, torch.eye(20).view(1, 1, 20, 20), atol=0.1)


def test_equalize_autocontrast_solarize_and_posterize():
    low = torch.linspace(0.4, 0.6, 256).view(1, 1, 16, 16)
    for name in ("equalize", "autocontrast"):
        out = OPERATIONS[name](low, torch.zeros(1))
        assert out.min() == pytest.approx(0, abs=1e-6) and out.max() == pytest.approx(1, abs=1e-6)
        assert torch.all(out.flatten().diff() >= 0)  # the order of the grey levels is kept
    flat = torch.full((1, 1, 4, 4), 0.3)
    assert torch.equal(OPERATIONS["equalize"](flat, torch.zeros(1)), flat)
    solarized = OPERATIONS["solarize"](low, torch.tensor([0.5]))  # at or above 0.5: inverted
    assert torch.allclose(solarized, torch.where(low >= 0.5, 1 - low, low))
    levels = torch.arange(256).float().view(1, 1, 16, 16) / 255
    four_bits = OPERATIONS["posterize"](levels, torch.tensor([1.0]))
    assert len(four_bits.unique()) == 16 and torch.all(four_bits <= levels)

