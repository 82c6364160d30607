"""A sweep's constraint (conf/sweep/NAME.yaml `constraint`): a second metric, higher is better, that a
trial must keep within `max_drop` of a reference setting's, e.g. clean accuracy while the sweep maximizes
robust accuracy.

The reference setting is queued as the study's first trial. Each trial's value of the metric is read from its
MLflow run (the last value logged) and kept as a trial user attr. The sampler is told how far a trial falls
short (Optuna's `Trial.set_constraint`, feasible when <= 0: TPE steers towards settings that keep the metric),
and the report answers with the best feasible trial, judged against the reference when it is written.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from imgrec.errors import ConfigError
from imgrec.sweep.space import encode_choice

VALUE_ATTR = "imgrec.constraint_value"  # user attr: the trial's value of the constraint's metric
KEYS = ("metric", "max_drop", "reference")


@dataclass(frozen=True)
class Constraint:
    metric: str  # e.g. val/acc, read from the trial's run
    max_drop: float  # in the metric's units: 0.03 of accuracy = 3 percentage points
    reference: dict[str, Any]  # the reference setting's params (a subset of the space's keys)

    @classmethod
    def from_spec(cls, spec: DictConfig | None, space_keys: Sequence[str]) -> "Constraint | None":
        if not spec:
            return None
        values = OmegaConf.to_container(spec, resolve=True)
        missing, unknown = [k for k in KEYS if values.get(k) is None], sorted(set(values) - set(KEYS))
        if missing or unknown:
            raise ConfigError(f"sweep.constraint needs {', '.join(KEYS)}" +
                              (f"; missing {', '.join(missing)}" if missing else "") +
                              (f"; unknown {', '.join(unknown)}" if unknown else ""))
        if not isinstance(values["reference"], dict) or not values["reference"]:
            raise ConfigError("sweep.constraint.reference must map space keys to the reference setting's values")
        outside = sorted(set(values["reference"]) - set(space_keys))
        if outside:
            raise ConfigError(f"sweep.constraint.reference: {', '.join(outside)} not in sweep.space")
        if float(values["max_drop"]) < 0:
            raise ConfigError(f"sweep.constraint.max_drop must be >= 0, got {values['max_drop']}")
        reference = {k: encode_choice(v) for k, v in values["reference"].items()}
        return cls(str(values["metric"]), float(values["max_drop"]), reference)

    def is_reference(self, params: dict[str, Any]) -> bool:
        return all(params.get(k) == v for k, v in self.reference.items())

    def reference_trial(self, trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
        """The first completed trial of the reference setting that has the metric."""
        return next((t for t in trials if t.state == TrialState.COMPLETE and self.is_reference(t.params)
                     and t.user_attrs.get(VALUE_ATTR) is not None), None)

    def floor(self, trials: Sequence[FrozenTrial]) -> float | None:
        reference = self.reference_trial(trials)
        return None if reference is None else reference.user_attrs[VALUE_ATTR] - self.max_drop

    def shortfall(self, params: dict[str, Any], value: float | None, trials: Sequence[FrozenTrial]) -> float:
        """What the sampler is told (<= 0: feasible). Unknown counts as feasible: before the reference has
        finished (another worker runs it) there is no floor yet, and a trial without the metric cannot be judged."""
        if value is None:
            return 0.0
        if self.is_reference(params):
            return -self.max_drop
        floor = self.floor(trials)
        return 0.0 if floor is None else floor - value

    def feasible(self, ranked: Sequence[FrozenTrial], trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The trials of `ranked` that keep the metric at or above the floor (none before the reference is in)."""
        floor = self.floor(trials)
        if floor is None:
            return []
        return [t for t in ranked if t.user_attrs.get(VALUE_ATTR) is not None and t.user_attrs[VALUE_ATTR] >= floor - 1e-12]
