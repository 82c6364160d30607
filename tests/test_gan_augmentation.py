"""GAN augmentation: a classifier's training batches gain samples from a conditional generator."""

import pytest
import torch

from imgrec.errors import ConfigError
from imgrec.tasks.classification import ClassificationTask
from imgrec.train import train
from tests.conftest import runs


@pytest.fixture
def generator_run(make_cfg, mlflow_client, idx_root) -> str:
    train(make_cfg("model=dcgan", "model.conditional=true", "model.generator.width=8",
                   "model.discriminator.width=8", "data=mnist", f"data.root={idx_root}"))
    (run,) = runs(mlflow_client)
    assert run.info.status == "FINISHED"
    return run.info.run_id


def test_synthetic_samples_are_added_to_every_training_batch(make_cfg, mlflow_client, idx_root, generator_run,
                                                             monkeypatch):
    seen: list[tuple[int, int]] = []
    original = ClassificationTask.training_step

    def spy(self, batch, batch_idx):
        images, labels = batch
        seen.append((len(labels), int(labels.max())))
        assert images.shape[1:] == (1, 28, 28) and torch.isfinite(images).all()
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassificationTask, "training_step", spy)
    train(make_cfg("data=mnist", f"data.root={idx_root}", f"data.synthetic.generator=runs:/{generator_run}",
                   "data.synthetic.fraction=0.5"))
    assert [size for size, _ in seen] == [24] * 4  # 16 real + 8 generated per batch
    assert all(label < 10 for _, label in seen)
    assert runs(mlflow_client)[-1].info.status == "FINISHED"


def test_an_unconditional_generator_is_refused(make_cfg, mlflow_client, idx_root):
    train(make_cfg("model=dcgan", "model.generator.width=8", "model.discriminator.width=8",
                   "data=mnist", f"data.root={idx_root}"))
    (gan,) = runs(mlflow_client)
    with pytest.raises(ConfigError, match="data.synthetic.generator: .* not a class-conditional"):
        train(make_cfg("data=mnist", f"data.root={idx_root}", f"data.synthetic.generator=runs:/{gan.info.run_id}"))
