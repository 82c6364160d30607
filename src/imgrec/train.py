"""compose -> instantiate -> fit -> test -> log. `train(cfg)` is what `imgrec train` (train.py), sweeps, tables
and cross-validation call (the last three through imgrec.jobs)."""

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console

from imgrec import hardware, hub, models, tuning
from imgrec.config import config_errors
from imgrec.data.synthetic import SyntheticSamples
from imgrec.errors import ConfigError
from imgrec.models.spec import NetSpec
from imgrec.tasks.checkpointing import AtomicCheckpointIO
from imgrec.tracking import run as tracking
from imgrec.tracking import secrets, spool
from imgrec.tracking.datasets import log_dataset
from imgrec.tracking.identity import choice_tags, config_hash
from imgrec.tracking.store import open_store, reap_orphans
from imgrec.validation import validate

log = logging.getLogger(__name__)


def train(cfg: DictConfig, callbacks: Sequence[L.Callback] = (), tags: dict[str, str] | None = None) -> float | None:
    """Train and test one configuration; returns `cfg.optimized_metric` (None if it was not logged).

    `callbacks` are added to the configured ones (e.g. a sweep's pruning callback) and `tags` to
    the MLflow run's (e.g. `mlflow.parentRunId`, which nests the run under a sweep's parent run).
    """
    validate(cfg)  # a bad value fails here, in one line, before anything is built or tracked
    secrets.register(cfg)  # data.storage_options: kept out of everything tracked
    with open_dict(cfg):
        cfg.seed = L.seed_everything(cfg.seed, workers=True, verbose=False)  # a null seed is drawn here and logged
    # The run's identity is the config as asked for: an `auto` choice is hashed as `auto`, like the device it
    # picks for (imgrec.tracking.identity), so a table row trained on other hardware is the same row.
    config_id, recipe_id = config_hash(cfg), config_hash(cfg, with_seed=False)
    with open_dict(cfg):  # `auto` becomes what this hardware runs, so the run's params say what ran
        if cfg.trainer.precision == "auto":
            cfg.trainer.precision = hardware.auto_precision(str(cfg.trainer.accelerator))

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.load()  # missing or corrupted data and a split that does not fit fail here, before any MLflow run
    finding = None
    if cfg.optimizer.lr == "auto":  # Lightning's learning-rate finder first; the run trains with its suggestion
        tuning.refuse_distributed(cfg)
        finding = tuning.find_lr(cfg, datamodule, build_task, Path(cfg.paths.output_dir) / "lr_find")
        with open_dict(cfg):
            cfg.optimizer.lr = finding[0]
    task = build_task(cfg, datamodule)

    client = open_store(cfg.logger.tracking_uri, reap=False)  # created once under a lock
    if spool.is_remote(cfg.logger.tracking_uri):  # what earlier runs could not send to this server (their end too)
        spool.send_spools(Path(cfg.paths.root) / "outputs", cfg.logger.tracking_uri, quiet=True)
    reap_orphans(client)  # runs left RUNNING by a dead process: ended KILLED
    # Created here, where losing the race to another process is handled; Lightning's logger then finds it.
    tracking.experiment_id(client, cfg.logger.experiment_name, cfg.logger.get("artifact_location"))
    resume = resolve_resume(cfg, client, config_id)
    if resume:  # keep writing checkpoints where the interrupted run wrote them
        with open_dict(cfg):
            cfg.callbacks.model_checkpoint.dirpath = str(resume.checkpoint.parent)

    output_dir = cfg.paths.output_dir
    # The progress bar on a terminal; elsewhere (logs, CI, sweeps) EpochSummary's one line per epoch.
    bar = sys.stdout.isatty() and cfg.callbacks.get("progress_bar") is not None
    with config_errors("callbacks"):
        callbacks = [instantiate(c) for key, c in cfg.callbacks.items()
                     if c is not None and (key != "progress_bar" or bar)] + list(callbacks)
    with config_errors("logger"):
        logger = instantiate(cfg.logger, run_name=run_name(), run_id=resume.run_id if resume else None)
    with config_errors("trainer"):
        trainer: L.Trainer = instantiate(trainer_config(cfg.trainer), callbacks=callbacks, logger=logger,
                                         enable_progress_bar=bar, enable_model_summary=False,  # callbacks.model_summary
                                         plugins=[AtomicCheckpointIO()])

    ckpt_path = str(resume.checkpoint) if resume else cfg.ckpt_path
    if not trainer.is_global_zero:  # DDP ranks > 0 train and test; rank zero tracks
        return fit_and_test(trainer, task, datamodule, cfg, ckpt_path)

    tags = {**tracking.run_tags(output_dir, config_id, recipe_id, cfg.callbacks.model_checkpoint.dirpath),
            **choice_tags(HydraConfig.get().runtime.choices), **(tags or {})}
    with tracking.tracked_run(logger, cfg, tags, resumed=resume is not None) as run_id:
        log_dataset(logger.experiment, run_id, datamodule)  # the UI's Dataset column
        if finding is not None:
            tuning.log_finding(logger.experiment, run_id, *finding)
        metric = fit_and_test(trainer, task, datamodule, cfg, ckpt_path)
        logger.experiment.log_metric(run_id, "fit/epochs", epochs_trained(trainer))  # for tables and leaderboards
        logger.experiment.log_metric(run_id, "fit/steps", trainer.global_step)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:
            logger.experiment.set_tag(run_id, tracking.BEST_CHECKPOINT_TAG, best)
    print_summary(trainer, cfg, metric, run_id, output_dir)
    return metric


# Trained models a run builds on are named by URI in config keys: model.backbone.checkpoint (transfer), model.source
# (a net to prune), task.fd_classifier (a GAN's sample-quality classifier), task.teacher (distillation) and
# data.synthetic.generator (GAN augmentation). They are loaded here, through imgrec.hub, and handed over built:
# networks, tasks and datamodules never see a URI.
TASK_MODELS = ("fd_classifier", "teacher")  # task.<key>: a model on [0, 1] pixels (hub.load_model)


def trainer_config(trainer: DictConfig) -> DictConfig:
    """The trainer config without the limits at Lightning's own default of 1.0 (all batches): passed
    explicitly, each makes Lightning print that all batches will be used."""
    limits = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")
    resolved = OmegaConf.to_container(trainer, resolve=True)
    return OmegaConf.create({k: v for k, v in resolved.items()
                             if not (k in limits and isinstance(v, float) and v == 1.0)})


def load_source(cfg: DictConfig, key: str, loader=hub.load_net):
    """The trained model config key `key` names, loaded with `loader` (hub.load_net or hub.load_model); None if unset."""
    uri = OmegaConf.select(cfg, key)
    return None if uri is None else loader(str(uri), tracking_uri=cfg.logger.tracking_uri, key=key)


def build_datamodule(cfg: DictConfig):
    with config_errors("data"):
        synthetic = None
        source = load_source(cfg, "data.synthetic.generator")
        if source is not None:
            gan, spec = source
            synthetic = SyntheticSamples(gan, spec.in_shape, spec.num_classes, cfg.data.synthetic.fraction,
                                         source=cfg.data.synthetic.generator)
        return instantiate(cfg.data, **({} if synthetic is None else {"synthetic": synthetic}))


def build_task(cfg: DictConfig, datamodule) -> L.LightningModule:
    model_spec = OmegaConf.to_container(cfg.model, resolve=True)
    with config_errors("model"):
        source = load_source(cfg, "model.backbone.checkpoint")
        parts = {} if source is None else {"backbone": source[0], "source": source[1].to_dict()}
        trained = load_source(cfg, "model.checkpoint")  # model=pruned: the trained net it prunes
        parts |= {} if trained is None else {"checkpoint": trained}
        net = models.build(cfg.model, datamodule.in_shape, datamodule.num_classes, **parts)
        models.check_input(net, datamodule.in_shape, HydraConfig.get().runtime.choices.get("model", "model"))
    if source is not None:  # checkpoints rebuild the net from the source's spec, never from its URI again
        model_spec["source"] = parts["source"]
        del model_spec["backbone"]
    if hasattr(net, "spec_config"):  # a net made from another (pruned): rebuilt from what it records
        model_spec = net.spec_config()
    with open_dict(cfg):
        if cfg.memory_format == "auto":
            cfg.memory_format = hardware.auto_memory_format(net)
    net = net.to(memory_format=getattr(torch, cfg.memory_format))
    if cfg.compile:  # in place: the module (and its checkpoint keys) stay the same; the first batches compile
        net.compile()
    with config_errors("optimizer"):
        optimizer = instantiate(cfg.optimizer)
        optimizer(params=[torch.nn.Parameter(torch.zeros(1))])  # bad values (lr < 0...) fail now, not mid-fit
    with config_errors("scheduler"):
        scheduler = instantiate(cfg.scheduler)
    with config_errors("task"):
        models_of_task = {key: load_source(cfg, f"task.{key}", hub.load_model) for key in TASK_MODELS
                          if OmegaConf.select(cfg, f"task.{key}") is not None}
        task = instantiate(
            cfg.task,
            net=net,
            optimizer=optimizer,
            scheduler=scheduler,
            num_classes=datamodule.num_classes,
            class_names=list(datamodule.class_names),
            **models_of_task,
        )
        task.check_data(datamodule)
    datamodule.unlabeled_ratio = getattr(task, "unlabeled_ratio", 0)  # a semi-supervised task's batches
    # Saved in every checkpoint (with the data's statistics and the run id), so the net is rebuilt from it alone.
    task.net_spec = NetSpec(model=model_spec, in_shape=tuple(datamodule.in_shape), num_classes=datamodule.num_classes,
                            data=datamodule.name, class_names=tuple(str(n) for n in datamodule.class_names),
                            data_root=datamodule.data_root, preprocess=datamodule.preprocess.to_dict(),
                            data_config=data_config(cfg, datamodule)).to_dict()
    return task


def data_config(cfg: DictConfig, datamodule) -> dict:
    """The run's data config, resolved, its folders and files absolute (where the files were found, for data.root):
    what every verb rebuilds the model's data from (imgrec.data.trained), on the run's splits and augmentation."""
    config = secrets.without_secrets(OmegaConf.to_container(cfg.data, resolve=True))
    for key in ("root", "labels", "path", "cache_dir"):
        value = config.get(key)
        if isinstance(value, str) and Path(value).expanduser().exists():
            config[key] = str(Path(value).expanduser().resolve())
    if "root" in config and datamodule.data_root:
        config["root"] = datamodule.data_root
    return config


def resolve_resume(cfg: DictConfig, client, config_id: str) -> tracking.Resume | None:
    """`ckpt_path=last`: the latest unfinished run of this config, if any. A file path: checked here."""
    if cfg.ckpt_path is None:
        return None
    if cfg.ckpt_path != "last":
        if not Path(cfg.ckpt_path).is_file():
            raise ConfigError(f"ckpt_path: no such checkpoint file '{cfg.ckpt_path}'")
        return None
    resume = tracking.find_resumable(client, cfg.logger.experiment_name, config_id)
    if resume is None:
        log.warning("ckpt_path=last: no interrupted run with this configuration; starting a new run")
    else:
        log.info("Resuming MLflow run %s from %s", resume.run_id, resume.checkpoint)
    return resume


def fit_and_test(trainer: L.Trainer, task, datamodule, cfg: DictConfig, ckpt_path: str | None) -> float | None:
    trainer.fit(task, datamodule=datamodule, ckpt_path=None if ckpt_path == "last" else ckpt_path)
    metric = trainer.callback_metrics.get(cfg.optimized_metric)
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(task, datamodule=datamodule, ckpt_path=best or None)
    return None if metric is None else float(metric)


def epochs_trained(trainer: L.Trainer) -> float:
    """Epochs of training done: fractional when max_steps stopped the run mid-epoch."""
    batches = trainer.fit_loop.epoch_loop.batch_progress.total.completed
    per_epoch = trainer.num_training_batches
    return batches / per_epoch if 0 < per_epoch < float("inf") else float(trainer.current_epoch)


def run_name() -> str:
    choices = HydraConfig.get().runtime.choices
    return f"{choices.get('model')}-{choices.get('data')}"


def print_summary(trainer: L.Trainer, cfg: DictConfig, metric: float | None, run_id: str, output_dir: str) -> None:
    """Where to find the run, after Lightning's own table of test metrics."""
    console = Console()
    if metric is not None:
        console.print(f"[bold]{cfg.optimized_metric}[/] {metric:.4f}", end="  ")
    if "test/acc" in trainer.callback_metrics:
        console.print(f"[bold]test/acc[/] {float(trainer.callback_metrics['test/acc']):.4f}", end="")
    console.print()
    console.print(f"[bold]MLflow run[/] {run_id} (experiment '{cfg.logger.experiment_name}')", soft_wrap=True)
    console.print(f"[bold]Outputs[/]    {output_dir}", soft_wrap=True)  # a path to copy: never broken across lines
    uri = cfg.logger.tracking_uri
    served = uri.startswith(("http://", "https://"))
    experiment = getattr(trainer.logger, "experiment_id", None)
    page = run_page(uri if served else UI_ADDRESS, experiment, run_id) if experiment is not None else uri
    if not served:
        console.print(f"[bold]Browse[/]     mlflow ui --backend-store-uri {uri}", soft_wrap=True)
    console.print(f"{'           ' if not served else '[bold]Browse[/]     '}{page}", soft_wrap=True)  # URLs unbroken


UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def run_page(server: str, experiment: str, run_id: str) -> str:
    """The run's page; workflowType: MLflow 3's UI otherwise opens in its GenAI mode (traces, token usage), whatever
    the experiment's kind."""
    return f"{server.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"
