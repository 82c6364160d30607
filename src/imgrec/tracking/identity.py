"""What makes two runs the same experiment: the resolved config without its infrastructure keys.

Infrastructure keys say where a run goes, how it is tracked or how fast it gets there, not what it
measures. The one list below is used by the config hash (table rows and resumes find their runs by it),
the default names of sweep studies, and the columns of leaderboards: a table row trained with its data
in another folder, on another machine or another device is the same row. For the same reason the hash is
taken before `trainer.precision=auto` and `memory_format=auto` are resolved for the hardware at hand.
"""

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_HASH_TAG = "imgrec.config_hash"  # a run's config_hash(): finished runs with the same one are reused
RECIPE_HASH_TAG = "imgrec.recipe_hash"  # the config hash without the seed: runs that differ only by seed share it
CHOICE_TAG = "imgrec.choice."  # + a config group: the option a run chose (imgrec.choice.model = cnn), for group_by

INFRA_KEYS = (
    "paths", "hydra", "logger", "ckpt_path",
    "data.root", "data.download", "data.num_workers", "data.eval_batch_size",
    "trainer.default_root_dir", "trainer.accelerator", "trainer.devices", "trainer.strategy", "trainer.num_nodes",
    "trainer.enable_progress_bar", "trainer.log_every_n_steps",
    # callbacks that only report or store; model_checkpoint's monitor and mode pick the tested checkpoint: kept
    "callbacks.model_checkpoint.dirpath", "callbacks.model_checkpoint.filename",
    "callbacks.model_checkpoint.save_last", "callbacks.model_checkpoint.auto_insert_metric_name",
    "callbacks.lr_monitor", "callbacks.progress_bar", "callbacks.model_summary",
    "callbacks.classification_report", "callbacks.epoch_summary", "callbacks.logged_model", "callbacks.time_to_accuracy",
)

# Keys added after runs were tracked, with the value that does what the config did before they existed: left out
# of the hash while they have it, so a store's earlier runs (table rows, resumes) still match.
NEUTRAL_WHEN_ADDED = {"task.tta_translate": 0, "data.augment.random_resized_crop": None,
                      "data.augment.randaugment": None, "data.augment.trivialaugment": False,
                      "data.augment.random_erasing": 0.0, "data.augment.mixup": 0.0, "data.augment.cutmix": 0.0,
                      "data.augment.mix_switch_prob": 0.5, "data.augment.mix_off_epoch": None,
                      "data.augment.progressive": None, "model.drop_path": 0.0}
# Values renamed after runs were tracked: hashed under the name they had, for the same reason.
HASHED_AS = {("data._target_", "imgrec.data.builtin.BuiltinImages"): "imgrec.data.datamodule.ImageDataModule"}


def is_infra(key: str) -> bool:
    """Whether a dotted config key (an override's or a flattened param's) is, or lies under, an infrastructure key."""
    return any(key == k or key.startswith(k + ".") for k in INFRA_KEYS)


def without_infra(container: dict[str, Any]) -> dict[str, Any]:
    """A resolved config (a plain dict) without its infrastructure keys."""
    def prune(node: dict[str, Any], prefix: str) -> dict[str, Any]:
        kept = {}
        for key, value in node.items():
            path = f"{prefix}{key}"
            if is_infra(path) or (path in NEUTRAL_WHEN_ADDED and value == NEUTRAL_WHEN_ADDED[path]):
                continue
            if isinstance(value, str) and (path, value) in HASHED_AS:
                value = HASHED_AS[path, value]
            kept[key] = prune(value, path + ".") if isinstance(value, dict) else value
        return kept

    return prune(container, "")


def config_hash(cfg: DictConfig, with_seed: bool = True) -> str:
    """A hash of what makes a run's result: the resolved config without infrastructure keys (and without the
    seed when `with_seed` is false: the hash of the recipe, shared by its seeds).

    Paths and the tracking URI are replaced by placeholders before resolving, so a key that interpolates
    them hashes the same in every run directory, on every machine, and after MLflow has exported
    MLFLOW_TRACKING_URI into this process (it does, on first use).
    """
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.paths.root = "<root>"
        cfg.paths.output_dir = "<output_dir>"
        cfg.logger.tracking_uri = "<tracking_uri>"
    container = without_infra(OmegaConf.to_container(cfg, resolve=True))
    if not with_seed:
        container.pop("seed", None)
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def choice_tag(group: str) -> str:
    """The tag of a config group's choice, the group as an override names it (`optimizer@task.optimizer_d`, with
    ":" for "@", which MLflow does not take in a tag's name)."""
    return CHOICE_TAG + group.replace("@", ":")


def choice_tags(choices: dict[str, Any]) -> dict[str, str]:
    """Tags of the config groups' options a run chose (Hydra's runtime choices), not Hydra's own groups."""
    return {choice_tag(group): str(option) for group, option in choices.items()
            if option is not None and not group.startswith("hydra")}
