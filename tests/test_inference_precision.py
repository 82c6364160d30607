"""Inference precision chosen per batch size (imgrec.inference_precision, imgrec.hub.PixelModel)."""

import copy

import pytest
import torch
from torch import nn

from imgrec import inference_precision as precision
from imgrec.errors import ConfigError
from imgrec.hub import PixelModel, load_model
from imgrec.models.spec import NetSpec


def tiny_model(channels: int = 3) -> PixelModel:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(channels, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    spec = NetSpec(model={}, in_shape=(channels, 12, 12), num_classes=4, data="x", mean=(0.5,) * channels,
                   std=(0.25,) * channels)
    return PixelModel(net, spec).eval()


@pytest.mark.parametrize("measured, expected", [
    ({1: (1.0, 2.0), 8: (1.0, 1.5), 64: (2.0, 1.0), 256: (8.0, 3.0)}, 64),  # bf16 pays from 64 on
    ({1: (1.0, 0.5), 8: (1.0, 0.5), 64: (2.0, 1.0), 256: (8.0, 3.0)}, 1),  # everywhere
    ({1: (1.0, 2.0), 8: (1.0, 0.5), 64: (2.0, 3.0), 256: (8.0, 3.0)}, 256),  # faster at 8 but not at 64: from 256
    ({1: (1.0, 2.0), 8: (1.0, 1.5), 64: (2.0, 3.0), 256: (8.0, 9.0)}, None),  # never
])
def test_bf16_is_chosen_from_the_batch_size_where_it_measured_faster(monkeypatch, measured, expected):
    monkeypatch.setattr(precision.hardware, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "median_ms", lambda net, images, bf16, repeats: measured[len(images)][bf16])
    start, timings = precision.bf16_from_batch(tiny_model(), (3, 12, 12))
    assert start == expected and timings == measured


def test_without_native_bf16_nothing_is_timed_and_fp32_stays(monkeypatch):
    monkeypatch.setattr(precision.hardware, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(precision, "median_ms", lambda *args: pytest.fail("timed on a CPU without native bf16"))
    assert precision.bf16_from_batch(tiny_model(), (3, 12, 12)) == (None, {})


def test_real_timings_are_positive_for_every_batch_size_and_leave_the_model_as_it_was(monkeypatch):
    monkeypatch.setattr(precision.hardware, "cpu_has_native_bf16", lambda: True)
    model = tiny_model(1)
    start, timings = precision.bf16_from_batch(model, (1, 12, 12), batch_sizes=(1, 4), repeats=3)
    assert sorted(timings) == [1, 4] and all(ms > 0 for pair in timings.values() for ms in pair)
    assert start in (None, 1, 4) and model.bf16_from is None  # the caller sets it from the answer


@pytest.mark.parametrize("channels", [1, 3])
def test_pixel_model_runs_bf16_only_from_its_batch_size(channels):
    model = tiny_model(channels)
    images = torch.rand(8, channels, 12, 12)
    with torch.no_grad():
        fp32 = model(images)
        model.bf16_from = 4
        small, large = model(images[:2]), model(images)
        channels_last = copy.deepcopy(model.net).to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # conv nets: a channels_last copy, as in training
            by_hand = channels_last(model.normalization(images)).float()
    assert torch.equal(small, fp32[:2])  # below the threshold: fp32, bit for bit
    assert large.dtype == torch.float32 and torch.equal(large, by_hand)  # from it: bf16 autocast
    assert model.bf16_net()[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model.net[0].weight.is_contiguous()  # the fp32 path's net stays as trained
    assert set(model.state_dict()) == {"net.0.weight", "net.0.bias", "net.4.weight", "net.4.bias"} | {
        k for k in model.state_dict() if k.startswith("normalization")}  # the copy is not part of the model's state
    assert not torch.equal(large, fp32)  # bf16 rounding shows


def test_an_unknown_precision_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"^precision: unknown 'fp8'"):
        load_model("nowhere.ckpt", precision="fp8")
