"""The job kernel: what every `imgrec VERB` is written on.

- `Verb`: a verb's spec (what it does, its config conf/verbs/<name>.yaml, its choices) and `run_verb`, which
  gives every verb the same command line (Hydra's `key=value`), `--help`, one-line errors, Ctrl-C handling,
  and prints its Report (imgrec.report) with where it went as the last line.
- `ModelJob`: a verb on a trained model (`model=<uri>`): the model on [0, 1] pixels (imgrec.hub), the data it
  was trained on (`data.root` defaults to where its run found it), `outputs/<verb>/<run id>/` and a child run
  of the model's run, RUNNING while the verb works.
- `TrainJob` and `reuse_or_train`: one training run a driver asks for (tables, cross-validation, sweeps),
  composed and checked when it is made, reused when a finished run with its config hash exists, otherwise
  trained by imgrec.train.train and found again in MLflow.

Runs are found with imgrec.tracking.query.find_runs and live through imgrec.tracking.run.lifecycle.
"""

import json
import logging
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from imgrec import config, console
from imgrec.config import COMPOSE_ERRORS, CONF_DIR, URI_FORMS, hydra_message, override_key
from imgrec.errors import ConfigError, ImgrecError
from imgrec.report import Report

log = logging.getLogger(__name__)

JOB_TAG = "imgrec.job"  # a random id given to each run a driver starts: it finds the run however train() ended
VERB_CONFIGS = CONF_DIR / "verbs"


# -- a verb ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verb:
    """One `imgrec VERB`: `run(job)` does the work and returns its Report (or None when it has nothing to report)."""

    name: str
    about: str  # what it does and writes: the start of `imgrec VERB --help` (the module's docstring)
    run: Callable[["Job"], Report | None]
    check: Callable[["Job"], None] | None = None  # bad input fails here, in one line, before any run exists
    takes_model: bool = False  # model=<uri>: run() gets a ModelJob, inside a child run of the model's run
    loads_model: bool = True  # (with takes_model) False: the URI is handed on as it is (serve)
    train_keys: tuple[str, ...] | None = None  # set: only these keys are the verb's; the rest go to its training runs
    plain_keys: tuple[str, ...] = ()  # its keys named like a config group of conf/ (experiment): plain values here
    required: Mapping[str, str] = field(default_factory=dict)  # key -> what to give it
    choices: Mapping[str, Sequence[str]] = field(default_factory=dict)  # key -> its values, listed in --help
    run_name: Callable[["ModelJob"], str] | None = None  # the child run's name (default: the verb's)
    interrupted: str = "interrupted"  # what Ctrl-C leaves behind, said when it comes

    @property
    def config_file(self) -> Path:
        return VERB_CONFIGS / f"{self.name}.yaml"

    def usage(self) -> str:
        words = ["imgrec", self.name, *(f"{key}=<{key}>" for key in self.required)]
        if self.takes_model and "model" not in self.required:
            words.append("model=<uri>")
        words.append("[key=value ...]")
        if self.train_keys is not None:
            words.append("[training overrides ...]")
        return " ".join(words)


@dataclass
class Job:
    """A verb's invocation: its config (conf/verbs/<verb>.yaml with the command line's overrides), and the
    command line's overrides of conf/train.yaml for the training runs it starts (verbs with `train_keys`)."""

    verb: Verb
    cfg: DictConfig
    train_overrides: list[str] = field(default_factory=list)
    own_overrides: list[str] = field(default_factory=list)  # the command line's overrides of the verb's config

    def execute(self) -> Report | None:
        """The verb's check, then its work."""
        if self.verb.check is not None:
            self.verb.check(self)
        return self.verb.run(self)


def split_overrides(argv: Sequence[str], driver_keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the driver's overrides: keys in or under `driver_keys`; every training run's: the rest).
    `hydra.*` overrides (the search path...) go to both."""
    driver, train = [], []
    for arg in argv:
        key = override_key(arg)
        if any(key == k or key.startswith(k + ".") for k in driver_keys):
            driver.append(arg)
        else:
            train.append(arg)
            if key.startswith("hydra."):
                driver.append(arg)
    return driver, train


def compose_verb(verb: Verb, argv: Sequence[str]) -> DictConfig:
    """conf/verbs/<verb>.yaml with the command line's overrides, or one ConfigError line. `model=runs:/<id>`
    names a trained model here, while Hydra would take `model` for the config group of that name: such keys
    (the verb's plain_keys) are set as plain values after composing."""
    keys = (*verb.plain_keys, *(("model",) if verb.takes_model else ()))
    plain = {override_key(a): a.split("=", 1)[1] for a in argv if "=" in a and override_key(a) in keys}
    cfg = config.compose_driver(f"verbs/{verb.name}", [a for a in argv if override_key(a) not in plain])
    for key, value in plain.items():
        OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None, force_add=True)
    return cfg


def open_job(verb: Verb, argv: Sequence[str]) -> Job:
    own, train_overrides = (split_overrides(argv, verb.train_keys) if verb.train_keys is not None
                            else (list(argv), []))
    for key, what in verb.required.items():
        if not any(override_key(a) == key for a in own):
            raise ConfigError(f"{key}=... is required: {what}")
    cfg = compose_verb(verb, own)
    if verb.takes_model and OmegaConf.is_missing(cfg, "model"):
        raise ConfigError(f"model=<uri> is required: {URI_FORMS}")
    if verb.takes_model and verb.loads_model:
        return ModelJob.open(verb, cfg, root_given="data.root" in {override_key(a) for a in own})
    return Job(verb, cfg, train_overrides, own)


def run_verb(verb: Verb, argv: Sequence[str] | None = None) -> Report | None:
    """`imgrec VERB argv...` as a console command: --help; a user error is one line `error: ...` and exit 1;
    Ctrl-C says what it leaves behind; the report is printed, and where it went is the last line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(argv):
        print(help_text(verb))
        return None
    console.setup()
    config.register_resolvers()
    try:
        report = open_job(verb, argv).execute()
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted: {verb.interrupted}") from None
    except (ImgrecError, *COMPOSE_ERRORS) as err:
        raise SystemExit(f"error: {hydra_message(err)}") from None
    if report is not None:
        show(report)
    return report


def show(report: Report) -> None:
    """The report on the console (long tables cut short: the files have every row), then where it went, then what
    the verb made (a new model's runs:/<id>); what could not be done goes to stderr and makes the exit status 1."""
    from imgrec.report import CONSOLE_ROWS

    print(report.markdown(limit=CONSOLE_ROWS))
    for failure in report.failures:
        print(f"error: {failure}", file=sys.stderr)
    if report.where():
        print(report.where())
    if report.made:
        print(report.made)
    if report.failures:
        raise SystemExit(1)


# -- help -----------------------------------------------------------------------------------------------

SHARED_KEYS = ("paths.root: the project folder (outputs/ and mlruns/ go under it; default: the current folder, "
               "or IMGREC_ROOT)",
               "logger.tracking_uri: the MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)")


def help_text(verb: Verb) -> str:
    """What `imgrec VERB --help` prints: the usage, what the verb does, the URI forms of a model, the choices of
    its keys, then its config file (the defaults, commented) and the keys every verb shares."""
    lines = [f"usage: {verb.usage()}", "", verb.about.strip(), ""]
    if verb.takes_model:
        lines += [f"model=<uri>: {URI_FORMS}.",
                  f"It writes outputs/{verb.name}/<run id>/ and logs a child run under the model's MLflow run.", ""]
    if verb.train_keys is not None:
        lines += ["Any other key=value goes to every training run it starts, as in `imgrec train` "
                  "(model=resnet20 data=cifar10 trainer=gpu ...).", ""]
    if verb.choices:
        lines.append("Choices:")
        lines += [f"  {key}: {', '.join(map(str, values))}" for key, values in verb.choices.items()]
        lines.append("")
    lines += [f"Options, with their defaults (conf/verbs/{verb.name}.yaml):", *config_body(verb.config_file)]
    lines += ["", "Every verb also takes:", *(f"  {k}" for k in SHARED_KEYS)]
    return "\n".join(lines).rstrip() + "\n"


def config_body(path: Path) -> list[str]:
    """A verb config's own keys with their comments: without the `# @package` line and the defaults list."""
    body, in_defaults = [], False
    for line in path.read_text().splitlines():
        if line.startswith("# @package") or (not body and not line.strip()):
            continue
        if line.startswith("defaults:"):
            in_defaults = True
            continue
        if in_defaults and (line.startswith((" ", "-")) or not line.strip()):
            continue
        in_defaults = False
        body.append(f"  {line}")
    return body


# -- a job on a trained model ---------------------------------------------------------------------------

@dataclass
class ModelJob(Job):
    """A verb on a trained model: the model (on [0, 1] pixels), the run that trained it (whose child runs the
    verb's runs become), the data it was trained on, and `outputs/<verb>/<run id>/` for the verb's files."""

    model: Any = None  # imgrec.hub.PixelModel
    client: Any = None  # MlflowClient of logger.tracking_uri
    source_run_id: str | None = None
    out_dir: Path = Path("outputs")
    data_root: str | None = None  # where the model's dataset is: data.root, else where its run found it
    child: Any = None  # its child run (imgrec.tracking.driver_run.DriverRun) while the verb runs
    _data: dict = field(default_factory=dict)  # the datamodules made, by whether they keep the run's classes

    @classmethod
    def open(cls, verb: Verb, cfg: DictConfig, root_given: bool = False) -> "ModelJob":
        """`root_given`: data.root was on the command line, and wins; otherwise a job on the model's own dataset
        looks where its run found it first (then where data.root's default points, then the usual lookup)."""
        from mlflow.exceptions import MlflowException

        from imgrec import hub
        from imgrec.tracking.store import open_store

        precision = str(OmegaConf.select(cfg, "precision", default="32-true"))  # predict: auto
        model = hub.load_model(str(cfg.model), cfg.logger.tracking_uri, key="model", precision=precision)
        client = open_store(cfg.logger.tracking_uri)
        run_id = model.spec.run_id
        try:
            if run_id:
                client.get_run(run_id)
        except MlflowException:  # a checkpoint from another store: its run is not here
            run_id = None
        name = run_id or Path(str(cfg.model)).stem.replace(":", "_")
        root = OmegaConf.select(cfg, "data.root")
        if not root_given and OmegaConf.select(cfg, "data._target_") is None:
            root = trained_data_root(model.spec, client, run_id) or root
        return cls(verb, cfg, [], model=model, client=client, source_run_id=run_id,
                   out_dir=Path(cfg.paths.root) / "outputs" / verb.name / name, data_root=root)

    @property
    def other_data(self) -> bool:
        """Whether the verb works on another dataset (data=<name> on the command line) than the model's own."""
        return OmegaConf.select(self.cfg, "data._target_") is not None

    def datamodule(self, classes: bool = True):
        """The dataset the verb works on, loaded once: the model's own as its run had it (its source, splits and
        classes, found where its run found it or in data.root; `classes=False`: every class of it), or another one
        (data=<name>) decoded to fit the model."""
        data = self.unloaded_datamodule(classes)
        data.load()
        return data

    def unloaded_datamodule(self, classes: bool = True):
        """The datamodule of `datamodule()`, its files not read yet (the built-in datasets know their shape and
        classes without them)."""
        from imgrec.data.trained import datamodule_of, fitted_datamodule

        if classes not in self._data:
            if self.other_data:
                config = OmegaConf.to_container(self.cfg.data, resolve=True)
                self._data[classes] = fitted_datamodule({**config, **({} if classes else {"classes": None})},
                                                        self.model.spec)
            else:
                self._data[classes] = datamodule_of(self.model.spec, self.data_root, classes)
        return self._data[classes]

    @property
    def dataset(self) -> str:
        """The name of the dataset the verb works on: data=<name> when given, else the model's own."""
        if not self.other_data:
            return self.model.spec.data
        from hydra.utils import get_class

        return str(OmegaConf.select(self.cfg, "data.name", default=None) or get_class(self.cfg.data._target_).name)

    def fitting_classes(self) -> tuple[str, ...]:
        """The class names of the dataset the verb works on, checked against the model: another dataset must have its
        image shape, and its classes in its order or data.classes saying which of them are the model's 0..k-1.
        ConfigError, in one line, when they do not fit."""
        model_spec = self.model.spec
        if not self.other_data:
            return self.model.class_names
        data = self.unloaded_datamodule()
        try:
            shape, names = tuple(data.in_shape), tuple(data.class_names)
        except RuntimeError:  # your own images: known once decoded
            data.load()
            shape, names = tuple(data.in_shape), tuple(data.class_names)
        if shape != tuple(model_spec.in_shape):
            raise ConfigError(f"data={self.dataset} has {'x'.join(map(str, data.in_shape))} images; the model takes "
                              f"{'x'.join(map(str, model_spec.in_shape))} (it was trained on {model_spec.data})")
        given = self.cfg.data.get("classes") is not None
        if len(names) != model_spec.num_classes:
            raise ConfigError(f"data={self.dataset} has {len(names)} classes{' (data.classes)' if given else ''}; "
                              f"the model has {model_spec.num_classes}: pass data.classes=[...] with the dataset's "
                              "indices of the model's classes, in its order")
        model_names = tuple(model_spec.class_names or ())
        if not given and model_names and names != model_names:
            raise ConfigError(f"data={self.dataset}'s classes {list(names)[:4]}... are not the model's "
                              f"{list(model_names)[:4]}...: pass data.classes=[...] to say which of the dataset's "
                              "classes are the model's 0..k-1")
        return model_names or names

    def evaluation_split(self, n: int | None = None):
        """The test images the verb evaluates the model on, as [0, 1] floats (the first `n` when given), their labels
        in the model's class order, and the class names: the model's own test split, or another dataset's that fits
        it (data=<name>, data.classes; see fitting_classes)."""
        names = self.fitting_classes()
        return (*self.test_split(n), names)

    def test_split(self, n: int | None = None):
        """The test images of the dataset the verb works on, as the model takes them: float [0, 1] (N, C, H, W),
        centre-cropped to its size, and their labels (in the model's class order); the first `n` of them when given."""
        return self.datamodule().test_pixels(n)

    def train_images(self, n: int):
        """`n` of the model's training images (a fixed random sample: none of them a test image) as float32 [0, 1]
        numpy arrays (N, C, H, W): what an int8 export calibrates on."""
        return self.datamodule().train_sample(n).numpy()

    def execute(self) -> Report | None:
        """The verb's check, then its work inside its child run; its report written to out_dir and logged there."""
        from imgrec.tracking.driver_run import DriverRun
        from imgrec.tracking.run import flat_params

        if self.verb.check is not None:
            self.verb.check(self)
        name = self.verb.run_name(self) if self.verb.run_name else self.verb.name
        params = flat_params(self.cfg, skip=("paths", "logger"))
        tags = {"mlflow.runName": name, "imgrec.role": self.verb.name, "imgrec.model_uri": str(self.cfg.model)}
        self.child = DriverRun.child_of(self.client, self.source_run_id, name, tags, params,
                                        experiment_name=self.cfg.logger.experiment_name)
        with self.child.running():
            report = self.verb.run(self)
            if report is not None and report.folder is None:
                report.publish(self.out_dir, self.child)
        return report


def trained_data_root(spec, client, run_id: str | None) -> str | None:
    """Where the model's dataset was found when it was trained: the checkpoint says (NetSpec.data_root), or its
    run's MLflow dataset input does (older checkpoints); None when neither is there any more."""
    from imgrec.data import catalog

    if spec.data_root and Path(spec.data_root).exists():
        return spec.data_root
    if run_id is None or spec.data not in catalog.DATASETS:
        return None
    for entry in client.get_run(run_id).inputs.dataset_inputs:
        if entry.dataset.name == spec.data:
            source = json.loads(entry.dataset.source).get("uri", "")
            root = catalog.root_of(spec.data, source.removeprefix("file://")) if source else None
            if root is not None and root.exists():
                return str(root)
    return None


# -- training runs a driver asks for ----------------------------------------------------------------------

class TrainJob:
    """One training run a driver asks for: conf/train.yaml with `overrides` (later wins), its MLflow run named
    `name` and tagged `tags`. Composed and checked when made, so a typo fails before anything trains; `what`
    names it in errors ("row mlp seed 0 of table fashion_mnist"). With `reuse` (tags, possibly none), a
    FINISHED run with those tags and the same config hash stands in for it (imgrec.tracking.identity)."""

    def __init__(self, overrides: Sequence[str], name: str, what: str, tags: Mapping[str, str] | None = None,
                 reuse: Mapping[str, str] | None = None):
        self.overrides, self.name, self.what = list(overrides), name, what
        self.tags, self.reuse = dict(tags or {}), None if reuse is None else dict(reuse)
        self.token = secrets.token_hex(8)  # JOB_TAG of the run this job trains
        self.cfg = self.compose()
        from imgrec.tracking.identity import config_hash

        self.config_id = config_hash(self.cfg)

    def compose(self) -> DictConfig:
        from imgrec.validation import validate

        try:
            cfg = config.compose(self.overrides, "unused")  # the run dir is set where the job trains
            validate(cfg)
        except ConfigError as err:
            raise ConfigError(f"{self.what}: {err}") from None
        return cfg

    def experiment_id(self, client) -> str:
        from imgrec.tracking.run import experiment_id

        logger = self.cfg.logger
        return experiment_id(client, str(logger.experiment_name), logger.get("artifact_location"))

    def finished_run(self, client):
        """A FINISHED run that stands in for this job (see `reuse`), or None."""
        from imgrec.tracking.identity import CONFIG_HASH_TAG
        from imgrec.tracking.query import find_runs

        if self.reuse is None:
            return None
        found = find_runs(client, self.experiment_id(client), {**self.reuse, CONFIG_HASH_TAG: self.config_id},
                          status="FINISHED", limit=1)
        return found[0] if found else None

    def started_run(self, client):
        """The run train() started for this job (whatever its status), or None before it started."""
        from imgrec.tracking.query import find_runs

        found = find_runs(client, self.experiment_id(client), {JOB_TAG: self.token}, limit=1)
        return found[0] if found else None

    def train(self, output_dir: Path, parent_id: str | None = None, callbacks: Sequence = ()) -> float | None:
        """Train it (logs also to output_dir/train.log, Hydra's files in output_dir/.hydra); train()'s metric."""
        from imgrec import train as training  # looked up at each call (tests stand in for train)
        from imgrec.progress import log_to_file

        cfg = config.placed(self.cfg, output_dir)
        tags = {**self.tags, "mlflow.runName": self.name, JOB_TAG: self.token,
                **({"mlflow.parentRunId": parent_id} if parent_id else {})}
        with log_to_file(output_dir):
            config.save_hydra_files(cfg, self.overrides, output_dir)
            return training.train(cfg, callbacks=callbacks, tags=tags)


def reuse_or_train(job: TrainJob, client, output_dir: Path, parent_id: str | None = None, train: bool = True):
    """The job's finished run: reused if there is one (see TrainJob; or the run a launcher trained for it), trained
    otherwise (with `train`; without, its launcher job failed: an error)."""
    run = job.finished_run(client)
    if run is None:  # the run a launcher trained for this job, found by its token
        started = job.started_run(client)
        run = started if started is not None and started.info.status == "FINISHED" else None
    if run is not None:
        log.info("%s: reusing finished run %s", job.what, run.info.run_id)
        return run
    if not train:
        raise ImgrecError(f"{job.what}: its launcher job did not finish (see the launcher's line above)")
    log.info("%s: training", job.what)
    job.train(output_dir, parent_id)
    run = job.started_run(client)
    if run is None or run.info.status != "FINISHED":
        raise ImgrecError(f"{job.what}: its run did not finish" + (f" ({run.info.status})" if run else ""))
    return run
