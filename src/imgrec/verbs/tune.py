"""`imgrec tune [model=...] [data=...] [optimizer=...] [batch_size=true] [min_lr=1e-6] [max_lr=10] [steps=100]`:
Lightning's learning-rate finder (and with batch_size=true its batch-size finder) on a training config.

The config is composed as `imgrec train` composes it. The finder trains `steps` batches with the learning rate
growing exponentially from min_lr to max_lr and suggests where the loss fell fastest (imgrec.tuning). Writes
outputs/tune/<run id>/lr_find.png (the loss against the learning rate, the suggestion marked) and a `tune` run with
the metrics tune/suggested_lr (and tune/suggested_batch_size). `imgrec train optimizer.lr=auto` runs the same finder
first and trains with its suggestion.
"""

from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from imgrec import tuning
from imgrec.config import compose
from imgrec.errors import ConfigError
from imgrec.jobs import Job, Verb
from imgrec.report import Report, Section, Table, text_column
from imgrec.tracking.driver_run import ROLE_TAG, DriverRun
from imgrec.tracking.run import experiment_id
from imgrec.tracking.store import open_store
from imgrec.validation import validate


def check(job: Job) -> None:
    cfg = job.cfg
    if not 0 < cfg.min_lr < cfg.max_lr:
        raise ConfigError(f"min_lr and max_lr: 0 < min_lr < max_lr, got {cfg.min_lr} and {cfg.max_lr}")
    for key in ("steps", "max_trials"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key}: a positive integer, got {cfg[key]!r}")


def run(job: Job) -> Report:
    from imgrec.train import build_datamodule, build_task

    cfg = job.cfg
    train_cfg = compose([*job.train_overrides, f"paths.root={cfg.paths.root}",
                         f"logger.tracking_uri={cfg.logger.tracking_uri}"], Path(cfg.paths.root) / "outputs" / "tune")
    validate(train_cfg)
    tuning.refuse_distributed(train_cfg)
    with open_dict(train_cfg):
        train_cfg.seed = L.seed_everything(train_cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(train_cfg)
    datamodule.prepare_data()
    datamodule.load()
    choices = HydraConfig.get().runtime.choices
    name = f"tune-{choices.get('model')}-{choices.get('data')}"
    client = open_store(cfg.logger.tracking_uri)
    tune_run = DriverRun.create(client, experiment_id(client, str(cfg.logger.experiment_name), None), name,
                                {ROLE_TAG: "tune"}, {"overrides": " ".join(job.train_overrides)})
    folder = Path(cfg.paths.root) / "outputs" / "tune" / tune_run.run_id
    with tune_run.running():
        suggestion, figure = tuning.find_lr(train_cfg, datamodule, build_task, folder, cfg.min_lr, cfg.max_lr,
                                            cfg.steps)
        metrics = {"tune/suggested_lr": suggestion}
        if cfg.batch_size:
            metrics["tune/suggested_batch_size"] = tuning.find_batch_size(train_cfg, datamodule, build_task, folder,
                                                                          cfg.max_trials)
        tune_run.log(metrics=metrics, files=[figure])
    rows = [{"setting": "optimizer.lr", "suggestion": f"{suggestion:.4g}"}]
    if cfg.batch_size:
        rows.append({"setting": "data.batch_size", "suggestion": str(metrics["tune/suggested_batch_size"])})
    table = Table("tune", [text_column("setting", "setting"), text_column("suggestion", "suggestion")], rows)
    text = (f"Train with it: `imgrec train {' '.join(job.train_overrides)} optimizer.lr={suggestion:.4g}` (or "
            "optimizer.lr=auto, which runs the finder first).")
    report = Report(f"Tuning {name.removeprefix('tune-')}", [Section(text=text, table=table)], name="tune",
                    metrics=metrics)
    report.publish(folder)
    return report


VERB = Verb("tune", __doc__, run, check=check, train_keys=("min_lr", "max_lr", "steps", "batch_size", "max_trials"))
