"""Explanations: every method's shape on 1- and 3-channel nets and an RNN, integrated gradients' completeness,
faithfulness of a model whose class is decided by a known region, the randomization sanity check, the script."""

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from imgrec.errors import ConfigError
from imgrec.explain import metrics
from imgrec.explain.methods import METHODS, attribute, check_methods, integrated_gradients, saliency
from imgrec.hub import PixelModel
from imgrec.models.cnn import ConvNet
from imgrec.models.rnn import RowRNN
from tests.conftest import cli, model_job_args, runs
from tests.learnable import pixel_model, region_data, train_region_model


@pytest.fixture(scope="module")
def region_model() -> PixelModel:
    """A small CNN trained until it reads the corner (a few seconds on a CPU)."""
    model = train_region_model()
    images, labels = region_data(256, torch.Generator().manual_seed(9))
    assert (model(images).argmax(1) == labels).float().mean() > 0.95  # it learned the corner
    return model


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("kind", ["cnn_gray", "cnn_rgb", "rnn"])
def test_every_method_returns_attributions_in_the_input_grid(name, kind):
    torch.manual_seed(0)
    if kind == "rnn":
        shape, net = (1, 10, 10), RowRNN((1, 10, 10), 3, hidden_size=8, cell="gru")
    else:
        shape = (1, 10, 10) if kind == "cnn_gray" else (3, 10, 10)
        net = ConvNet(shape, 3, channels=(4, 8), fc=(8,))
    model = pixel_model(net, shape, classes=3)
    images, targets = torch.rand(3, *shape), torch.tensor([0, 1, 2])
    if kind == "rnn" and name == "gradcam":  # no feature map to weight: said so, in one line
        with pytest.raises(ConfigError, match="gradcam needs a convolutional layer; RowRNN has none"):
            attribute(METHODS[name], model, images, targets)
        return
    maps = attribute(METHODS[name], model, images, targets)
    assert maps.shape == images.shape and torch.isfinite(maps).all()
    assert maps.abs().sum() > 0


def test_gradcam_on_a_net_without_convolutions_is_one_clear_error():
    model = pixel_model(RowRNN((1, 10, 10), 3, hidden_size=8, cell="gru"), (1, 10, 10), classes=3)
    with pytest.raises(ConfigError, match="gradcam needs a convolutional layer"):
        check_methods(["saliency", "gradcam"], model)
    with pytest.raises(ConfigError, match="unknown"):
        check_methods(["saliency", "shapley"], model)


def test_integrated_gradients_are_complete(region_model):
    """The attributions sum to the target logit's difference between the image and the black baseline."""
    images, _ = region_data(8, torch.Generator().manual_seed(1))
    targets = region_model(images).argmax(1)
    maps = attribute(integrated_gradients, region_model, images, targets)
    logits = region_model(images).gather(1, targets[:, None])[:, 0]
    baseline = region_model(torch.zeros_like(images)).gather(1, targets[:, None])[:, 0]
    assert maps.sum(dim=(1, 2, 3)) == pytest.approx((logits - baseline).tolist(), rel=0.05, abs=0.05)


def test_a_trained_models_integrated_gradients_delete_faster_than_random(region_model):
    images, labels = region_data(32, torch.Generator().manual_seed(2))
    images, labels = images[labels == 1], labels[labels == 1]  # the corner decides these
    torch.manual_seed(0)
    ig = attribute(integrated_gradients, region_model, images, labels)
    noise = attribute(METHODS["random"], region_model, images, labels)
    ig_deletion, ig_insertion = metrics.deletion_insertion(region_model, images, labels, ig, steps=12)
    random_deletion, random_insertion = metrics.deletion_insertion(region_model, images, labels, noise, steps=12)
    assert ig_deletion.mean() < random_deletion.mean() - 0.1
    assert ig_insertion.mean() > random_insertion.mean()
    corner = ig[:, :, :4, :4].sum() / ig.sum()
    assert corner > 0.5  # most of the evidence where the class is decided (16 of 144 pixels)


def test_the_sanity_check_marks_a_method_that_ignores_the_model(region_model):
    """A 'method' computed on a fixed untrained copy does not change when the model's weights are randomized."""
    torch.manual_seed(3)
    untrained = pixel_model(ConvNet((1, 12, 12), 2, channels=(8, 16), fc=(16,)), (1, 12, 12))

    def on_untrained_copy(model, images, targets):
        return saliency(untrained, images, targets)

    images, labels = region_data(8, torch.Generator().manual_seed(4))
    rhos = {}
    for name, method in {"ignores the model": on_untrained_copy, "saliency": saliency}.items():
        original = attribute(method, region_model, images, labels)
        cascade = metrics.sanity(method, region_model, images, labels, original, points=3)
        assert [depth for _, depth, _ in cascade][0] == 1 and len(cascade) == 3
        rhos[name] = float(np.mean(cascade[-1][2]))
    assert rhos["ignores the model"] > 0.99  # flagged: rank correlation stays at 1
    assert abs(rhos["saliency"]) < metrics.SANITY_THRESHOLD


@pytest.mark.slow
def test_explain_writes_attributions_grid_and_report_on_gray_and_rgb_models(trained_classifier, tmp_path):
    cli("explain", *model_job_args(trained_classifier), "n=4", "methods=[saliency,gradcam,guided_backprop,occlusion,random]",
           "metrics=true", "evaluation.subset=2", "evaluation.sanity_points=2", "evaluation.steps=8")
    run_id, shape = trained_classifier["run"].info.run_id, trained_classifier["in_shape"]
    out = tmp_path / "outputs" / "explain" / run_id
    saved = np.load(out / "attributions.npz")
    assert saved["indices"].tolist() == [0, 1, 2, 3] and saved["saliency"].shape == (4, *shape)
    assert {"labels", "preds", "gradcam", "guided_backprop", "occlusion", "random"} <= set(saved.files)
    report = (out / "report.md").read_text()
    assert "most faithful" in report and "Adebayo" in report and "| guided_backprop |" in report
    assert (out / "grid.png").stat().st_size > 0 and (out / "sanity.png").stat().st_size > 0
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("method,deletion_auc_mean,deletion_auc_std,insertion_auc_mean")
    (tracked,) = [r for r in runs(MlflowClient(trained_classifier["tracking"])) if r.info.run_name == "explain"]
    assert tracked.data.tags["imgrec.source_run"] == run_id and tracked.info.status == "FINISHED"
    assert "saliency/deletion_auc" in tracked.data.metrics and np.isfinite(tracked.data.metrics["gradcam/sensitivity_max"])
    assert {"attributions.npz", "report.md", "metrics.csv", "grid.png"} <= {a.path for a in
                                                                           MlflowClient(trained_classifier["tracking"]).list_artifacts(tracked.info.run_id)}


def test_explain_with_a_bad_index_is_one_line_before_any_run(gray_classifier):
    with pytest.raises(SystemExit) as done:
        cli("explain", *model_job_args(gray_classifier), "indices=[0,99999]")
    assert done.value.code == "error: indices: [99999] out of range for a test set of 64 images"
    assert [r.info.run_name for r in runs(MlflowClient(gray_classifier["tracking"]))] == ["cnn-mnist"]
