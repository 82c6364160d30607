"""The image families (LeNet-5, AlexNet, VGG-11, GoogLeNet, CIFAR ResNets, ResNet-18, WRN, DenseNet-BC,
MobileNetV2, ViT), built from their configs."""

import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from mlflow import MlflowClient
from torch import nn

from imgrec.config import CONF_DIR, options
from imgrec.errors import ConfigError
from imgrec.models.resnet import BasicBlock, PreActBlock, ZeroPadShortcut
from imgrec.train import train
from tests.conftest import runs

PINNED = re.compile(r"^# params, 10 classes: ([\d,]+) on 1x28x28, ([\d,]+) on 3x32x32(?: \(paper: ([\d.]+)M\))?"
                    r"(; one net takes 28 or 32 px)?$", re.MULTILINE)


def pinned(name: str) -> tuple[int, int, str | None, bool]:
    """What conf/model/NAME.yaml pins: (parameters on 1x28x28, on 3x32x32, the paper's millions, any image size)."""
    found = PINNED.search((CONF_DIR / "model" / f"{name}.yaml").read_text())
    assert found, f"conf/model/{name}.yaml has no '# params, 10 classes: ...' line"
    gray, rgb, paper, any_size = found.groups()
    return int(gray.replace(",", "")), int(rgb.replace(",", "")), paper, any_size is not None


FAMILIES = [m for m in options("model") if m not in ("transfer", "pruned")]  # their size is their source's
CLASSIFIERS = [m for m in FAMILIES if m not in ("autoencoder", "dcgan")]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batches gain nothing from a second thread; on a shared 2-core box it only spins and waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: str, in_shape: tuple[int, int, int], *overrides: str, num_classes: int = 10) -> nn.Module:
    """The net exactly as train.py builds it: composed config -> partial -> (in_shape, num_classes)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", *overrides])
    return instantiate(cfg.model, _convert_="all")(in_shape=in_shape, num_classes=num_classes)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def last_linear(net: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """(parent, attribute, layer) of the last nn.Linear in modules() order: what transfer learning replaces."""
    name = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = name.rpartition(".")
    return net.get_submodule(parent_name), attr, net.get_submodule(name)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_has_its_pinned_size_and_a_classifier_ends_in_one_replaceable_linear(name):
    """On 1x28x28 and 3x32x32: the parameter count pinned beside its config (rounding to the paper's); a classifier
    gives 10 logits, with the last nn.Linear the one transfer learning replaces; and one net of an ANY_SIZE family
    takes both 28 and 32 px (global pooling or LeNet's padding absorbs the difference)."""
    gray, rgb, paper, any_size = pinned(name)
    for shape, count in (((1, 28, 28), gray), ((3, 32, 32), rgb)):
        net = build(name, shape).eval()
        assert n_params(net) == count
        if name not in CLASSIFIERS:
            continue
        channels = shape[0]
        with torch.no_grad():
            for size in (28, 32) if any_size else (shape[1],):
                assert net(torch.randn(2, channels, size, size)).shape == (2, 10)
            parent, attr, head = last_linear(net)
            assert head.out_features == 10
            setattr(parent, attr, nn.Linear(head.in_features, 3))
            assert net(torch.randn(2, *shape)).shape == (2, 3)
    if paper:  # the papers print two significant figures (WRN: 36.5M; DenseNet-BC's 0.77M as 0.8M)
        digits = len(paper.replace(".", "").lstrip("0"))
        assert float(f"{rgb / 1e6:.{digits}g}") == float(paper)


def test_option_a_shortcuts_subsample_and_zero_pad_without_parameters():
    net = build("resnet20", (3, 32, 32))
    assert not [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    shortcuts = [m for m in net.modules() if isinstance(m, ZeroPadShortcut)]
    assert len(shortcuts) == 2  # 16->32 and 32->64
    assert sum(n_params(m) for m in shortcuts) == 0
    x = torch.randn(2, 16, 8, 8)
    out = shortcuts[0](x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2]) and not out[:, 16:].any()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 20  # 6n+2 weighted layers: 19 convs and the fc


@pytest.mark.parametrize(
    "name, depth, rule", [("resnet20", 21, "6n+2"), ("resnet56", 4, "6n+2"), ("wrn", 27, "6n+4")]
)
def test_an_invalid_depth_is_a_value_error_naming_model_depth(name, depth, rule):
    with pytest.raises(ValueError, match=rf"model\.depth must be {re.escape(rule)}.*got {depth}"):
        build(name, (3, 32, 32), f"model.depth={depth}")


def test_preact_switches_resnet18_to_pre_activation_blocks():
    standard = build("resnet18", (3, 32, 32))
    preact = build("resnet18", (3, 32, 32), "model.preact=true")
    blocks = {net: [m for m in net.modules() if isinstance(m, (BasicBlock, PreActBlock))] for net in (standard, preact)}
    assert len(blocks[standard]) == len(blocks[preact]) == 8
    assert all(type(b) is BasicBlock for b in blocks[standard])
    assert all(type(b) is PreActBlock for b in blocks[preact])
    # Projections: 1x1 conv + BN in standard blocks, a bare 1x1 conv added to the pre-activation stream.
    assert isinstance(blocks[standard][2].shortcut, nn.Sequential)
    assert isinstance(blocks[preact][2].shortcut, nn.Conv2d)
    assert n_params(preact) == 11_172_170


def test_wrn_depth_width_and_dropout_shape_the_network():
    net = build("wrn", (3, 32, 32), "model.depth=16", "model.width=2", "model.dropout=0.3")
    blocks = [m for m in net.modules() if isinstance(m, PreActBlock)]
    assert len(blocks) == 6  # (16 - 4) / 6 = 2 per stage
    assert [b.conv2.out_channels for b in blocks[::2]] == [32, 64, 128]  # 16k, 32k, 64k
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.3] * 6
    with pytest.raises(ValueError, match="model.width"):
        build("wrn", (3, 32, 32), "model.width=0")


def test_lenet_pads_small_images_to_its_32_pixel_field():
    for size, padding in [(28, (2, 2)), (32, (0, 0))]:
        net = build("lenet5", (1, size, size))
        assert net.features[0].padding == padding
        before_adaptive_pool = net.features[:-1](torch.randn(1, 1, size, size))
        assert before_adaptive_pool.shape == (1, 16, 5, 5)  # the classic 16x5x5 map, untouched by the pool
    relu = build("lenet5", (1, 28, 28), "model.activation=relu", "model.pool=max")
    kinds = {type(m) for m in relu.modules()}
    assert {nn.ReLU, nn.MaxPool2d} <= kinds and not {nn.Tanh, nn.AvgPool2d} & kinds


def test_vgg11_reduces_28_and_32_pixels_to_one_by_one():
    net = build("vgg11", (3, 32, 32)).eval()
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 8  # config A; its 3 FC layers are one Linear here
    with torch.no_grad():
        for size in (28, 32):  # 28-14-7-4-2-1 thanks to ceil_mode
            assert net.features(torch.randn(1, 3, size, size)).shape == (1, 512, 1, 1)


@pytest.mark.parametrize(
    "model, data, root, target",
    [
        ("resnet20", "cifar10", "cifar10_root", "imgrec.models.resnet.CifarResNet"),
        ("lenet5", "mnist", "idx_root", "imgrec.models.lenet.LeNet5"),
    ],
)
def test_train_end_to_end_leaves_a_finished_run(make_cfg, mlflow_client, request, model, data, root, target):
    root = request.getfixturevalue(root)  # only the dataset this run reads
    metric = train(make_cfg(f"model={model}", f"data={data}", f"data.root={root}"))
    assert 0.0 <= metric <= 1.0
    (run,) = runs(mlflow_client)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"{model}-{data}"
    assert "test/acc" in run.data.metrics
    assert run.data.params["model._target_"] == target


ONE_STEP = ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "data.batch_size=4", "data.eval_batch_size=4", "data.val_size=8", "logger.log_model=false"]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_trains_through_train_and_leaves_a_finished_run(name, make_cfg, mlflow_client, idx_root):
    model = "experiment=vit" if name == "vit" else f"model={name}"  # the ViT with its recipe
    train(make_cfg(model, "data=mnist", f"data.root={idx_root}", *ONE_STEP))
    (run,) = runs(mlflow_client)
    assert run.info.status == "FINISHED" and run.info.run_name == f"{name}-mnist"
    assert run.data.metrics["perf/train_img_per_s"] > 0
    if name in CLASSIFIERS:
        assert "test/acc" in run.data.metrics


def test_an_invalid_depth_in_train_is_one_line_before_any_run(make_cfg, idx_root, tmp_path):
    with pytest.raises(ConfigError, match="model.depth") as error:
        train(make_cfg("model=resnet20", "model.depth=21", "data=mnist", f"data.root={idx_root}"))
    assert "\n" not in str(error.value)
    assert runs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")) == []  # built before MLflow is touched
