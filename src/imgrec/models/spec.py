"""What rebuilds a trained network and feeds it, saved in every imgrec checkpoint under NET_SPEC_KEY.

Written by the tasks (imgrec.tasks.base), read by imgrec.hub: plain lists, strings and numbers, so a checkpoint
loads with torch.load(weights_only=True).
"""

from dataclasses import asdict, dataclass
from typing import Any

NET_SPEC_KEY = "imgrec_net"


@dataclass(frozen=True)
class NetSpec:
    model: dict[str, Any]  # the resolved model config (conf/model/*.yaml, `_partial_: true`)
    in_shape: tuple[int, int, int]  # (C, H, W) of the images it was trained on
    num_classes: int
    data: str  # the dataset's name (conf/data)
    class_names: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None  # per-channel statistics of the training split, in [0, 1] units
    std: tuple[float, ...] | None = None
    run_id: str | None = None  # the MLflow run that wrote the checkpoint
    data_root: str | None = None  # the folder its data was found in (data.root for the jobs that use it)
    preprocess: dict[str, Any] | None = None  # imgrec.data.decode.Preprocess: a raw image -> its input (older: None)
    data_config: dict[str, Any] | None = None  # its run's resolved data config, folders absolute (imgrec.data.trained)

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> "NetSpec":
        known = {k: v for k, v in entry.items() if k in cls.__dataclass_fields__}
        for key in ("in_shape", "class_names", "mean", "std"):
            if known.get(key) is not None:
                known[key] = tuple(known[key])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        """Lists, strings and numbers only: loadable with weights_only=True."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
