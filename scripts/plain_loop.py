"""The hand-written PyTorch loop the pipeline is measured against (`python scripts/bench.py --vs-plain`).

    python scripts/plain_loop.py [train.py overrides]     # e.g. model=keras_cnn trainer.max_epochs=2

It does the work `python train.py` does with the same overrides, without the framework: the same data
(the same splits, normalization and batched augmentation), the same network, optimizer, batch size,
epochs, precision and memory format; each epoch it trains on the training split and measures the
validation split, then the test set once. It reads the config through Hydra and the data through
imgrec.data, but imports neither Lightning nor MLflow. It prints one line of JSON.
"""

import json
import sys
import time

START = time.perf_counter()  # before the imports: they are part of what is timed

import torch  # noqa: E402 (imports after the clock starts)
import torch.nn.functional as F  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from imgrec import hardware, models  # noqa: E402
from imgrec.config import compose  # noqa: E402
from imgrec.data import catalog  # noqa: E402
from imgrec.data.augment import Augment  # noqa: E402
from imgrec.data.splits import split_dataset  # noqa: E402


def batches(images: torch.Tensor, labels: torch.Tensor, size: int, order: torch.Tensor | None = None):
    order = torch.arange(len(labels)) if order is None else order
    for start in range(0, len(order), size):
        index = order[start : start + size]
        yield images[index], labels[index]


def accuracy(net, split, normalize, size: int, autocast) -> float:
    net.eval()
    correct = 0
    with torch.no_grad(), autocast():
        for images, labels in batches(split.gather(), split.labels, size):
            correct += int((net(normalize(images)).argmax(1) == labels).sum())
    net.train()
    return correct / len(split)


def main(overrides: list[str]) -> None:
    cfg = compose(overrides, output_dir="unused")
    if cfg.scheduler.schedule is not None:
        raise SystemExit("error: the plain loop runs without an LR schedule (scheduler=none)")
    torch.manual_seed(cfg.seed)
    data = cfg.data
    splits = split_dataset(catalog.read_parts(data.name, data.root, data.download), data.val_size, data.split_seed,
                           data.classes, data.train_size)
    net = models.build(cfg.model, splits.preprocess.in_shape, len(splits.class_names))
    precision = cfg.trainer.precision
    precision = hardware.auto_precision(str(cfg.trainer.accelerator)) if precision == "auto" else precision
    memory_format = hardware.auto_memory_format(net) if cfg.memory_format == "auto" else cfg.memory_format
    net = net.to(memory_format=getattr(torch, memory_format))
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    augment, normalize, size = Augment(**data.augment), splits.normalization, splits.preprocess.image_size
    train_images, train_labels = splits.train.gather(), splits.train.labels
    epochs, images_trained = cfg.trainer.max_epochs, 0
    for _ in range(epochs):
        for images, labels in batches(train_images, train_labels, data.batch_size, torch.randperm(len(train_labels))):
            with autocast():
                pixels = augment(images.float().div_(255), size, normalize.mean)
                loss = F.cross_entropy(net(normalize(pixels)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images_trained += len(labels)
        val_acc = accuracy(net, splits.val, normalize, data.eval_batch_size, autocast)
    test_acc = accuracy(net, splits.test, normalize, data.eval_batch_size, autocast)
    print(json.dumps({"val_acc": val_acc, "test_acc": test_acc, "epochs": epochs, "images_trained": images_trained,
                      "precision": precision, "memory_format": memory_format,
                      "in_process_s": round(time.perf_counter() - START, 2)}))


if __name__ == "__main__":
    main(sys.argv[1:])
