"""The random number generators' states, saved in checkpoints so that a resumed run is the run it replaces.

What a run draws after a checkpoint (the next epoch's batch order, its augmentation, dropout) comes from
torch's global generator (and CUDA's, numpy's and Python's for code that uses them). The states are kept
as tensors, ints and lists, so checkpoints stay loadable with torch.load(weights_only=True).
"""

import random
from typing import Any

import numpy as np
import torch


def capture() -> dict[str, Any]:
    name, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    version, state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": position,
                  "has_gauss": has_gauss, "cached": cached},
        "python": {"version": version, "state": list(state), "gauss": gauss},
    }


def restore(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["cached"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
