"""Accuracy under common corruptions (imgrec.data.corruptions), and Hendrycks & Dietterich's corruption errors.

- `corruption_errors`: per corruption, CE = (1 - acc) / (1 - reference's acc) and relative CE = (clean - acc) /
  (reference's clean - reference's acc), accuracies averaged over the same severities (so their sums over
  severities, the paper's form, give the same ratios); mCE and relative mCE are the means over corruptions.
- `CorruptionAccuracy`: a callback that, after testing, measures the model on the first `n` test images under every
  corruption and severity and logs `test/corruption_acc` (the mean: mCA), `test/corruption/clean` (those n images
  uncorrupted) and `test/corruption/<name>` (each corruption's mean over severities), what `imgrec reproduce
  table=corruptions` reads. `imgrec corrupt` gives the full report for one model.
"""

import logging
from collections.abc import Mapping, Sequence

import lightning as L
import torch

from imgrec.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corruptions_for, generator_for

log = logging.getLogger(__name__)
PREFIX = "test/corruption/"


def corruption_errors(accuracy: Mapping[str, float], clean: float, reference: Mapping[str, float],
                      reference_clean: float) -> dict[str, dict[str, float | None]]:
    """name -> {"ce", "relative_ce"} for the corruptions both have (None where the reference makes no error)."""
    out = {}
    for name in accuracy.keys() & reference.keys():
        error, reference_error = 1 - accuracy[name], 1 - reference[name]
        added, reference_added = clean - accuracy[name], reference_clean - reference[name]
        out[name] = {"ce": error / reference_error if reference_error > 0 else None,
                     "relative_ce": added / reference_added if reference_added > 0 else None}
    return out


def mean_errors(errors: Mapping[str, Mapping[str, float | None]]) -> dict[str, float]:
    """{"mce", "relative_mce"}: the means over the corruptions where each is defined (absent where none is)."""
    out = {}
    for key, name in (("ce", "mce"), ("relative_ce", "relative_mce")):
        values = [e[key] for e in errors.values() if e[key] is not None]
        if values:
            out[name] = sum(values) / len(values)
    return out


def logged_accuracies(metrics: Mapping[str, float]) -> tuple[dict[str, float], float | None]:
    """(corruption -> mean accuracy, clean accuracy on the same images) from a run's metrics."""
    accuracy = {k.removeprefix(PREFIX): v for k, v in metrics.items() if k.startswith(PREFIX) and not k.endswith("/clean")}
    return accuracy, metrics.get(f"{PREFIX}clean")


def relative_to(metrics: Mapping[str, float], reference_metrics: Mapping[str, float]) -> dict[str, float]:
    """{"test/mce", "test/relative_mce"} of a run against a reference run (standard training, say), from what
    CorruptionAccuracy logged in each; {} when either did not measure corruptions."""
    accuracy, clean = logged_accuracies(metrics)
    reference, reference_clean = logged_accuracies(reference_metrics)
    if clean is None or reference_clean is None:
        return {}
    errors = corruption_errors(accuracy, clean, reference, reference_clean)
    return {f"test/{key}": value for key, value in mean_errors(errors).items()}


class CorruptionAccuracy(L.Callback):
    """After the test, the model's accuracy under every corruption (or `corruptions`) at `severities`, on the first
    `n` test images (0: off), corruptions drawn from `seed`; rank zero measures and logs."""

    def __init__(self, n: int = 0, severities: Sequence[int] = SEVERITIES, corruptions: Sequence[str] | None = None,
                 batch_size: int = 1000, seed: int = 0):
        unknown = [c for c in corruptions or () if c not in CORRUPTIONS]
        if unknown or not set(severities) <= set(SEVERITIES) or n < 0:
            raise ValueError(f"callbacks.corruptions: n >= 0, severities in 1-5 and corruptions among "
                             f"{', '.join(CORRUPTIONS)}; got n={n}, severities={list(severities)}, unknown {unknown}")
        self.n, self.severities, self.batch_size, self.seed = n, list(severities), batch_size, seed
        self.corruptions = list(corruptions) if corruptions else None  # None: every one for the images' channels

    @torch.inference_mode()
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if not self.n or not trainer.is_global_zero or not hasattr(datamodule, "head"):
            return
        images, labels = datamodule.head("test", self.n)
        pixels = datamodule.eval_pixels(images)
        was_training = pl_module.training
        pl_module.eval()

        def accuracy(batch: torch.Tensor) -> float:
            right = 0
            for start in range(0, len(batch), self.batch_size):
                logits = pl_module(batch[start : start + self.batch_size])
                right += int((logits.argmax(1) == labels[start : start + self.batch_size]).sum())
            return right / len(labels)

        names = self.corruptions or corruptions_for(pixels.shape[1])
        metrics = {f"{PREFIX}clean": accuracy(pixels)}
        for name in names:
            per_severity = []
            for severity in self.severities:
                bad = corrupt(pixels, name, severity, generator_for(self.seed, name, severity))
                per_severity.append(accuracy(bad))
            metrics[f"{PREFIX}{name}"] = sum(per_severity) / len(per_severity)
        metrics["test/corruption_acc"] = sum(metrics[f"{PREFIX}{name}"] for name in names) / len(names)
        pl_module.train(was_training)
        log.info("corruptions: clean %.4f, mean over %d corruptions x %d severities %.4f (%d test images)",
                 metrics[f"{PREFIX}clean"], len(names), len(self.severities), metrics["test/corruption_acc"],
                 len(labels))
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
