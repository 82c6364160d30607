"""The data of a trained model: its own, rebuilt from its checkpoint's spec (imgrec.models.spec.NetSpec: its run's
source, splits, classes and augmentation), or another dataset made to fit it. Every verb on a trained model reads
its data here, so that a model trained on a folder is evaluated, attacked, pruned and fine-tuned on that folder's
splits, not on a dataset's defaults."""

from typing import Any

from hydra.utils import instantiate

from imgrec.data.datamodule import ImageDataModule
from imgrec.errors import ConfigError

DECODE_KEYS = ("image_size", "channels", "crop_fraction", "interpolation")  # what the model's preprocessing fixes


def data_config_of(spec, classes: bool = True) -> dict[str, Any]:
    """The data config of the model's run (an older checkpoint's: its dataset's config with its classes), without GAN
    augmentation (a URI: only training uses it); `classes=False`: every class of the dataset."""
    config = dict(spec.data_config) if spec.data_config else _legacy_config(spec)
    config["synthetic"] = None
    if not classes:
        config["classes"] = None
    return config


def datamodule_of(spec, root: str | None = None, classes: bool = True) -> ImageDataModule:
    """The model's own data, not yet loaded; `root` (data.root) replaces where its run found it. Nothing is
    downloaded: a model's data is where its run found it, or where data.root says."""
    config = data_config_of(spec, classes)
    if root is not None and "root" in config:
        config["root"] = str(root)
    if "download" in config:
        config["download"] = False
    return build(config)


def fitted_datamodule(config: dict[str, Any], spec) -> ImageDataModule:
    """Another dataset for a trained model (`imgrec evaluate data=...`), not yet loaded: images of your own are
    decoded by the model's preprocessing, so that they come at the size and in the mode it takes."""
    config = dict(config)
    if all(key in config for key in DECODE_KEYS) and spec.preprocess:
        config.update({key: spec.preprocess[key] for key in DECODE_KEYS})
    config["synthetic"] = None
    return build(config)


def training_overrides(spec, root: str | None = None) -> list[str]:
    """Overrides of conf/train.yaml that train on the model's data as its run did (its source, splits, classes and
    augmentation): for a run that trains from a model (imgrec compress's fine-tuning)."""
    from hydra.utils import get_class

    from imgrec.config import override_value

    config = {k: v for k, v in data_config_of(spec).items() if k not in ("synthetic",)}
    if root is not None and "root" in config:
        config["root"] = str(root)
    option = config.get("name") or get_class(config["_target_"]).name
    return [f"data={option}", *(f"data.{key}={override_value(value)}" for key, value in config.items()
                                if key not in ("_target_", "name"))]


def build(config: dict[str, Any]) -> ImageDataModule:
    try:
        return instantiate(config, _convert_="all")
    except Exception as err:  # Hydra wraps the datamodule's own ConfigError
        cause = err.__cause__ or err
        if isinstance(cause, ConfigError):
            raise cause from None
        raise


def _legacy_config(spec) -> dict[str, Any]:
    """A checkpoint written before checkpoints held their data config: its dataset's config, its classes by name."""
    from omegaconf import OmegaConf

    from imgrec.config import compose_driver
    from imgrec.data import catalog

    cfg = compose_driver("train", [f"data={spec.data}"])
    config = OmegaConf.to_container(cfg.data, resolve=True)
    names = catalog.get_spec(spec.data).class_names
    if spec.class_names is not None and tuple(spec.class_names) != tuple(names):
        unknown = [n for n in spec.class_names if n not in names]
        if unknown:
            raise ConfigError(f"the model's classes {unknown} are not classes of {spec.data}")
        config["classes"] = [names.index(n) for n in spec.class_names]
    if spec.data_root:
        config["root"] = spec.data_root
    return config
