"""The families of the history table (AlexNet, GoogLeNet, DenseNet-BC, MobileNetV2, ViT), what a network
costs (imgrec.cost) and the `history` table with its cost columns and plot. Every family's training steps and
parameter counts are in tests/test_conv_families.py."""

import csv
import itertools

import pytest
import torch
from torch import nn

from imgrec import cost
from imgrec.models.densenet import DenseLayer, DenseNet
from imgrec.models.googlenet import Inception
from imgrec.models.mobilenet import InvertedResidual, MobileNetV2
from imgrec.models.vit import ViT
from imgrec.tasks.optim import warmup_cosine
from tests.test_tables import reproduction


def test_flop_counts_match_the_formulas_of_known_layers():
    conv = nn.Conv2d(16, 32, 3, padding=1)
    assert cost.mflops(conv, (16, 8, 8)) * 1e6 == 2 * 16 * 32 * 9 * 8 * 8  # 2 FLOPs per multiply-add, bias free
    linear = nn.Linear(100, 10)
    assert cost.mflops(linear, (100,)) * 1e6 == 2 * 100 * 10
    depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)  # one 3x3 filter per channel
    assert cost.mflops(depthwise, (32, 8, 8)) * 1e6 == 2 * 32 * 9 * 8 * 8
    assert cost.parameters(conv) == 16 * 32 * 9 + 32


def test_densenet_bc_grows_k_channels_per_layer_and_halves_them_in_transitions():
    net = DenseNet((3, 32, 32), 10, depth=40, growth=12)  # (40 - 4) / 6 = 6 layers per block
    layers = [m for m in net.modules() if isinstance(m, DenseLayer)]
    assert len(layers) == 18 and layers[1].bn1.num_features == layers[0].bn1.num_features + 12
    assert layers[0].conv1.out_channels == 48  # the bottleneck: 4k
    assert layers[6].bn1.num_features == (24 + 6 * 12) // 2  # after the first transition
    with pytest.raises(ValueError, match=r"model.depth must be 6n\+4"):
        DenseNet((3, 32, 32), 10, depth=101)


def test_mobilenetv2_adds_shortcuts_only_where_the_shape_is_kept_and_width_thins_it():
    net = MobileNetV2((3, 32, 32), 10)
    blocks = [m for m in net.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17 and sum(b.residual for b in blocks) == 10
    depthwise = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert net.features(torch.zeros(1, 3, 32, 32)).shape[-1] == 4  # CIFAR strides: 32 -> 4, not 1
    assert cost.parameters(MobileNetV2((3, 32, 32), 10, width=0.5)) < cost.parameters(net) / 2


def test_inception_concatenates_its_four_branches():
    block = Inception(192, 64, 96, 128, 16, 32, 32)  # 3a of Szegedy et al. 2015, Table 1
    assert block(torch.zeros(2, 192, 8, 8)).shape == (2, 256, 8, 8)
    assert block.branch5[1][0].kernel_size == (5, 5)


def test_vit_resizes_its_position_embeddings_and_checks_its_shape():
    net = ViT((1, 28, 28), 10, patch=4, dim=32, depth=2, heads=4).eval()
    assert net.pos_embed.shape == (1, 1 + 7 * 7, 32)
    assert net.position_embedding((7, 7)) is net.pos_embed  # the training size: untouched
    assert net.position_embedding((8, 8)).shape == (1, 1 + 8 * 8, 32)
    with torch.no_grad():
        assert net(torch.zeros(3, 1, 32, 32)).shape == (3, 10)
    with pytest.raises(ValueError, match="multiples of model.patch=5"):
        ViT((1, 28, 28), 10, patch=5)
    with pytest.raises(ValueError, match="multiple of model.heads"):
        ViT((1, 28, 28), 10, dim=30, heads=4)


def test_warmup_cosine_rises_linearly_then_decays_to_its_floor():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=100, warmup=0.1, min_factor=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:3] == pytest.approx([0.1, 0.2, 0.3]) and lrs[9] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.55) and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))


@pytest.mark.slow
def test_the_history_table_measures_each_network_and_plots_accuracy_against_mflops(project, idx_root):
    tmp_path = project
    tiny = ["trainer.accelerator=cpu", "~callbacks.progress_bar", "~callbacks.model_summary", "data.batch_size=16",
            "data.eval_batch_size=32", "data.val_size=32"]
    markdown = reproduction(["table=history", "budget=smoke", "table.rows=[lenet5,densenet]", f"paths.root={tmp_path}",
                             "data=mnist", f"data.root={idx_root}", *tiny]).run().markdown()
    with (tmp_path / "outputs/tables/history_smoke.csv").open() as f:
        rows = {row["row"]: row for row in csv.DictReader(f)}
    assert float(rows["densenet"]["params"]) == cost.parameters(DenseNet((1, 28, 28), 10))
    assert float(rows["densenet"]["mflops"]) > 10 * float(rows["lenet5"]["mflops"]) > 0
    assert float(rows["lenet5"]["latency_ms"]) > 0 and float(rows["densenet"]["train_img_per_s"]) > 0
    assert rows["densenet"]["year"] == "2017" and rows["densenet"]["difference"] == ""  # mnist is not cifar10
    assert "not comparable: published on cifar10, ours on mnist" in markdown
    assert "| DenseNet-BC (L=100, k=12) (2017) [2] |" in markdown and "MFLOPs / image" in markdown
    assert (tmp_path / "outputs/tables/history_smoke_cost.png").stat().st_size > 10_000
