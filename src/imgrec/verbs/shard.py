"""`imgrec shard data=<source> [data.*=...] out=DIR|s3://bucket/prefix [shard_mb=100] [min_shards=8] [workers=N]`:
a dataset written as shards that `imgrec train data=stream data.uri=OUT` streams, on any machine and every rank.

The source is composed as `imgrec train` composes it (any data= imgrec reads: a built-in dataset, a folder, a
HuggingFace dataset, with its split, size and decoding settings), its splits drawn as training draws them, and
written by worker processes as WebDataset tar files of uint8 images at their stored size with their labels, beside a
manifest (class names, image shape and preprocessing, pixel statistics, counts and shards per split, the source and
its digest, the split seed): imgrec.data.shards. `out` is a folder or any fsspec store (credentials from the
environment, or `storage_options`). Writing again what is already there rewrites nothing. The report (splits,
shards, images, MB) goes to outputs/shard/<out's last folder>/.
"""

import os
from pathlib import Path

from omegaconf import OmegaConf

from imgrec.config import compose
from imgrec.data import remote, shards
from imgrec.errors import ConfigError
from imgrec.jobs import Job, Verb
from imgrec.report import Column, Report, Section, Table, text_column
from imgrec.validation import validate

COLUMNS = [text_column("split", "split"), Column("shards", "shards"), Column("images", "images", ",d"),
           Column("MB", "mb", ",.1f")]


def check(job: Job) -> None:
    cfg = job.cfg
    if not isinstance(cfg.shard_mb, (int, float)) or cfg.shard_mb <= 0:
        raise ConfigError(f"shard_mb: a positive size of a shard in MB, got {cfg.shard_mb!r}")
    if not isinstance(cfg.min_shards, int) or cfg.min_shards < 1:
        raise ConfigError(f"min_shards: a positive number of training shards, got {cfg.min_shards!r}")
    if cfg.workers is not None and (not isinstance(cfg.workers, int) or cfg.workers < 1):
        raise ConfigError(f"workers: a positive number of processes or null, got {cfg.workers!r}")
    if str(OmegaConf.select(source_config(job), "data._target_", default="")).endswith("StreamImages"):
        raise ConfigError("data=stream: the source is already shards; shard a dataset (data=folder, data=hf, ...)")


def source_config(job: Job):
    cfg = compose([*job.train_overrides, f"paths.root={job.cfg.paths.root}"], Path(job.cfg.paths.root) / "outputs")
    validate(cfg)
    return cfg


def run(job: Job) -> Report:
    from imgrec.train import build_datamodule, data_config

    cfg, train_cfg = job.cfg, source_config(job)
    datamodule = build_datamodule(train_cfg)
    datamodule.prepare_data()
    datamodule.load()
    options = OmegaConf.to_container(cfg.storage_options, resolve=True) if cfg.storage_options else None
    out = str(cfg.out)
    manifest, written = shards.write(datamodule, out, data_config(train_cfg, datamodule), options, cfg.shard_mb,
                                     cfg.min_shards, cfg.workers or os.cpu_count() or 1)
    rows = []
    for name in shards.SPLITS:
        split = manifest["splits"][name]
        sizes = [remote.size(remote.join(out, s["name"]), options) or 0 for s in split["shards"]]
        rows.append({"split": name, "shards": len(split["shards"]), "images": split["count"], "mb": sum(sizes) / 2**20})
    what = (f"written in {manifest['seconds']:.1f} s" if written else
            f"already there (written {manifest['written']}): nothing rewritten")
    text = (f"{manifest['source']['name']} ({manifest['source']['uri']}) as shards at {out}, {what}; images "
            f"{'x'.join(map(str, manifest['image_shape']))}, {len(manifest['class_names'])} classes. Train on them: "
            f"`imgrec train data=stream data.uri={out}`.")
    report = Report(f"Shards of {manifest['source']['name']}", [Section(text=text, table=Table("shards", COLUMNS, rows))],
                    name="shard")
    report.publish(Path(cfg.paths.root) / "outputs" / "shard" / (out.rstrip("/").rsplit("/", 1)[-1] or "shards"))
    return report


VERB = Verb("shard", __doc__, run, check=check, required={"out": "a folder or store prefix for the shards"},
            train_keys=("out", "shard_mb", "min_shards", "workers", "storage_options"))
