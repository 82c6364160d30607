"""Row-wise RNNs, transfer learning from a file / an MLflow run, and the data subsets it relies on."""

import pytest
import torch
from hydra.utils import instantiate

from imgrec.models.rnn import RowRNN
from imgrec.models.transfer import InputAdapter, split_off_head
from imgrec.tasks.transfer import TransferTask
from imgrec.train import train
from tests.conftest import runs


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
def test_row_rnns_read_one_row_per_step(cell, in_shape):
    net = RowRNN(in_shape, 10, cell=cell, hidden_size=16, num_layers=2, bidirectional=True)
    assert net.rnn.input_size == in_shape[0] * in_shape[2]  # 28 values (MNIST) or 96 (CIFAR) per step
    assert net(torch.randn(3, *in_shape)).shape == (3, 10)


def test_row_order_matters_to_the_rnn():
    torch.manual_seed(0)
    net = RowRNN((1, 8, 8), 4, cell="gru", hidden_size=8)
    images = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(net(images), net(images.flip(2)))


def test_input_adapter_converts_channels_and_size():
    to_rgb32 = InputAdapter((1, 28, 28), (3, 32, 32))
    assert to_rgb32(torch.rand(2, 1, 28, 28)).shape == (2, 3, 32, 32)
    to_gray28 = InputAdapter((3, 32, 32), (1, 28, 28))
    rgb = torch.rand(2, 3, 32, 32)
    assert to_gray28(rgb).shape == (2, 1, 28, 28)


def test_split_off_head_removes_exactly_the_last_linear(make_cfg):
    net = instantiate(make_cfg().model, _convert_="all")(in_shape=(1, 28, 28), num_classes=10)
    body, features = split_off_head(net)
    assert features == 128 and body(torch.zeros(2, 1, 28, 28)).shape == (2, 128)


def test_data_classes_and_train_size_select_a_fixed_labelled_subset(make_cfg, idx_root):
    cfg = make_cfg("data=mnist", f"data.root={idx_root}", "data.classes=[7,2,5]", "data.train_size=20")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    assert datamodule.num_classes == 3 and datamodule.class_names == ("7", "2", "5")
    assert len(datamodule.train_set) == 20
    for subset in (datamodule.train_set, datamodule.val_set, datamodule.test_set):
        assert set(subset.labels.tolist()) <= {0, 1, 2}
    again = instantiate(cfg.data)
    again.setup()
    assert torch.equal(again.train_set.images, datamodule.train_set.images)  # the same 20, every run


def test_transfer_from_a_run_id_fine_tunes_on_other_data(make_cfg, mlflow_client, idx_root, cifar10_root):
    train(make_cfg("data=mnist", f"data.root={idx_root}", "data.classes=[0,1,2,3,4]"))
    (source,) = runs(mlflow_client)

    cfg = make_cfg("model=transfer", f"model.backbone.checkpoint=runs:/{source.info.run_id}",
                   "data=cifar10", f"data.root={cifar10_root}", "trainer.max_epochs=2")
    assert cfg.task._target_ == "imgrec.tasks.transfer.TransferTask"  # chosen by model=transfer
    metric = train(cfg)
    target = runs(mlflow_client)[-1]
    assert target.info.status == "FINISHED" and 0.0 <= metric <= 1.0
    assert target.data.params["model.backbone.checkpoint"] == f"runs:/{source.info.run_id}"


def test_backbone_is_frozen_for_freeze_epochs_then_trains_at_the_scaled_lr(make_cfg, idx_root, tmp_path, monkeypatch):
    train(make_cfg("data=mnist", f"data.root={idx_root}"))
    checkpoint = next((tmp_path / "outputs").rglob("last.ckpt"))
    seen = []

    def record(self):
        original(self)
        seen.append(any(p.requires_grad for p in self.net.backbone.parameters()))

    original = TransferTask.on_train_epoch_start
    monkeypatch.setattr(TransferTask, "on_train_epoch_start", record)
    cfg = make_cfg("model=transfer", f"model.backbone.checkpoint={checkpoint}", "data=mnist",
                   f"data.root={idx_root}", "trainer.max_epochs=3", "model.backbone.freeze_epochs=2",
                   "model.backbone.lr_scale=0.01", "optimizer.lr=0.002")
    train(cfg)
    assert seen == [False, False, True]


def test_missing_backbone_checkpoint_is_a_config_error(make_cfg, idx_root):
    from imgrec.errors import ConfigError

    with pytest.raises(ConfigError, match="model.backbone.checkpoint"):
        train(make_cfg("model=transfer", "model.backbone.checkpoint=/nope.ckpt", "data=mnist",
                       f"data.root={idx_root}"))
