"""Few-shot evaluation of a trained backbone: nearest-prototype episodes (imgrec.fewshot) and `imgrec fewshot`."""

import csv

import pytest
import torch
from mlflow import MlflowClient

from imgrec import fewshot
from tests.conftest import cli, model_job_args, runs


def test_separable_features_score_every_episode_and_random_ones_score_chance():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(8).repeat_interleave(30)
    noise = torch.randn(len(labels), 8, generator=generator)
    separable = torch.nn.functional.one_hot(labels, 8).float() * 5 + 0.1 * noise
    for distance in fewshot.DISTANCES:
        accuracies = fewshot.episode_accuracies(separable, labels, ways=5, shots=1, queries=5, episodes=50,
                                                distance=distance)
        assert accuracies.shape == (50,) and torch.all(accuracies == 1.0)
    noise = torch.randn(len(labels), 16, generator=generator)
    chance = fewshot.episode_accuracies(noise, labels, ways=4, shots=5, queries=10, episodes=300)
    assert abs(float(chance.mean()) - 0.25) < 0.03
    again = fewshot.episode_accuracies(noise, labels, ways=4, shots=5, queries=10, episodes=300)
    assert torch.equal(chance, again)  # the seed decides the episodes


def test_queries_go_to_the_nearest_class_mean_by_the_distance_asked_for():
    # whichever images are drawn as supports, the class means stay apart: every query is right
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    apart = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    assert torch.all(fewshot.episode_accuracies(apart, labels, ways=2, shots=2, queries=1, episodes=20) == 1.0)
    # directions tell the classes apart, lengths do not: cosine is always right; Euclidean fails whenever class 0's
    # support is its long vector (the short query is then nearer class 1's)
    two = torch.tensor([0, 0, 1, 1])
    rays = torch.tensor([[1.0, 0.0], [100.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    assert torch.all(fewshot.episode_accuracies(rays, two, 2, 1, 1, 40, distance="cosine") == 1.0)
    euclidean = fewshot.episode_accuracies(rays, two, 2, 1, 1, 40, distance="euclidean")
    assert set(euclidean.tolist()) == {0.5, 1.0}


def test_the_backbone_is_the_net_up_to_its_last_linear_layer_and_leaves_the_model_whole(trained_classifier):
    from imgrec import hub

    model = hub.load_model(trained_classifier["uri"], trained_classifier["tracking"])
    shape = trained_classifier["in_shape"]
    features = fewshot.backbone(model, shape)
    images = torch.rand(3, *shape)
    assert features(images).shape == (3, 32)  # the fc=[32] layer's output
    assert model(images).shape == (3, 10)  # its head is still there
    with torch.no_grad():
        assert torch.allclose(model.net.classifier[-1](features(images)), model(images), atol=1e-5)
    other = (1, 28, 28) if shape[0] == 3 else (3, 32, 32)  # images of the other shape are adapted
    assert fewshot.backbone(model, other)(torch.rand(2, *other)).shape == (2, 32)


def test_fewshot_on_gray_and_rgb_models_writes_the_results_and_a_child_run(trained_classifier, capsys):
    c = trained_classifier
    args = [*model_job_args(c), "data.classes=[0,1,2,3]", "ways=3", "shots=[1,2]", "queries=1", "episodes=30"]
    with pytest.raises(SystemExit, match=r"^error: data.classes: the model was trained on .* pass allow_seen=true"):
        cli("fewshot", *args)
    report = cli("fewshot", *args, "allow_seen=true")
    folder = c["home"] / "outputs" / "fewshot" / c["run"].info.run_id
    with (folder / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["shots"] for r in rows] == ["1", "2"]
    assert {"ways", "shots", "episodes", "acc", "ci_low", "ci_high"} <= set(rows[0])
    for row in rows:
        assert row["ways"] == "3" and row["episodes"] == "30"
        assert 0 <= float(row["ci_low"]) <= float(row["acc"]) <= float(row["ci_high"]) <= 1
    assert (folder / "accuracy.png").stat().st_size > 0 and (folder / "report.md").exists()
    children = [r for r in runs(MlflowClient(c["tracking"])) if r.data.tags.get("imgrec.role") == "fewshot"]
    (child,) = children
    assert child.data.tags["mlflow.parentRunId"] == c["run"].info.run_id
    assert child.data.metrics["fewshot/3way_1shot_acc"] == pytest.approx(float(rows[0]["acc"]))
    assert report.where() in capsys.readouterr().out


def test_fewshot_on_another_datasets_images(gray_classifier, cifar10_root):
    """A 1-channel 28 px model asked about CIFAR-10's classes: the images are adapted to it (as transfer does)."""
    report = cli("fewshot", *model_job_args(gray_classifier), "data=cifar10", f"data.root={cifar10_root}",
                 "ways=2", "shots=1", "queries=1", "episodes=10")
    assert report.metrics["fewshot/2way_1shot_acc"] >= 0
    assert "cifar10" in report.title


@pytest.mark.parametrize("args, message", [
    (["ways=1"], "ways must be one integer from 2 to the 10 classes"),
    (["shots=[1,0]"], "shots must be a positive integer or a list of them"),
    (["distance=manhattan"], "distance must be one of euclidean, cosine"),
    (["data.classes=[1,1]"], "data.classes must be distinct class indices of mnist in 0..9"),
    (["shots=[50]"], r"shots \+ queries \(50 \+ 15\) exceed the"),
    ([], "the model was trained on every class of mnist: name classes with data.classes"),
])
def test_bad_input_is_one_line(gray_classifier, args, message):
    extra = [] if any(a.startswith("data.classes") for a in args) or not args else ["allow_seen=true",
                                                                                     "data.classes=[0,1,2,3,4,5,6,7,8,9]"]
    with pytest.raises(SystemExit, match=f"^error: {message}") as err:
        cli("fewshot", *model_job_args(gray_classifier), *extra, *args)
    assert "\n" not in str(err.value.code)
