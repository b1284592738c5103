"""From the data config to a TaskTable and DataLoaders."""
from __future__ import annotations

import logging
import os
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from deepart.core.config import SOURCE_ROOT_ARGS, build
from deepart.core.errors import ConfigError
from deepart.data.cache import use_cache
from deepart.data.dataset import PaintingDataset, collate
from deepart.data.samplers import ShardSampler
from deepart.data.table import TaskTable
from deepart.data.transforms import min_decode_side, transform_from_config

log = logging.getLogger(__name__)


def source_root_arg(source: Any) -> str | None:
    """Which argument of a `data.source` node holds the dataset's location (None when it has none)."""
    return next((key for key in SOURCE_ROOT_ARGS if key in source), None)


def set_data_root(data_cfg: DictConfig, root: str) -> None:
    """Point a data config (also a resolved one, as a checkpoint keeps it) at `root`: `data.root` and the
    argument of `data.source` that receives it."""
    data_cfg.root = root
    key = source_root_arg(data_cfg.source)
    if key is not None:
        data_cfg.source[key] = root


def data_root(data_cfg: Any) -> str | None:
    """Where a data config's dataset is: `data.root`, or for a config saved before that key existed, the
    argument of `data.source` that held it."""
    if data_cfg.get("root") is not None:
        return str(data_cfg["root"])
    key = source_root_arg(data_cfg.get("source", {}))
    return None if key is None or data_cfg["source"][key] is None else str(data_cfg["source"][key])


def load_table(data_cfg: DictConfig, cached: bool = True) -> TaskTable:
    """Instantiate `data.source` (a function returning a TaskTable) and keep `data.tasks`; with `cached`,
    read the preprocessed copies when `data.cache` allows and they are up to date (deepart.data.prepare)."""
    unset = [key for key in data_cfg if OmegaConf.is_missing(data_cfg, key)]
    if unset:
        raise ConfigError(f"data.{unset[0]} is not set: pass data.{unset[0]}=... on the command line "
                          f"(see docs/data.md)")
    table = build(data_cfg.source, tasks=list(data_cfg.tasks) if data_cfg.tasks else None)
    table = table.select_tasks(list(data_cfg.tasks) if data_cfg.tasks else None)
    for note in table.notes:
        log.info(note)
    if cached:
        table = use_cache(table, data_cfg)
    log.info("data: %s", table.summary())
    return table


def num_workers(data_cfg: DictConfig) -> int:
    n = data_cfg.get("num_workers")
    return min(8, os.cpu_count() or 1) if n is None else int(n)


def _loader(dataset, batch_size, sampler, workers, device, drop_last=False) -> DataLoader:
    """A DataLoader that never touches the global RNG: it draws its workers' base seed from a generator
    of its own (the global torch RNG also drives dropout, so a draw there whenever a loader starts its
    workers would make a resumed run differ from an uninterrupted one). Augmentations do not depend on
    it either: every sampled item carries its own seed (deepart.data.samplers)."""
    cuda = torch.device(device).type == "cuda"
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate, pin_memory=cuda, drop_last=drop_last, generator=torch.Generator(),
                      persistent_workers=workers > 0, prefetch_factor=(4 if cuda else 2) if workers else None)


def train_loader(table: TaskTable, data_cfg: DictConfig, sampler_cfg: DictConfig, batch_size: int,
                 seed: int, device: str, rank: int = 0, world_size: int = 1,
                 augment: DictConfig | None = None, dataset: Dataset | None = None,
                 workers: int | None = None) -> DataLoader:
    """The training split in the sampler's seeded order, through the training transform (with the image-level
    options of the `augment` config: policy, erasing). `dataset`: other items of the split's rows in its place
    (e.g. precomputed features: the same order and batches)."""
    if dataset is None:
        dataset = PaintingDataset(table, "train", transform_from_config(data_cfg, train=True, augment=augment),
                                  min_decode_side(data_cfg))
    sampler = build(sampler_cfg, labels=table.labels("train"), **_sampler_kwargs(sampler_cfg, table),
                    seed=seed, rank=rank, world_size=world_size)
    drop_last = len(sampler) > batch_size  # avoid a final batch of 1 (BatchNorm cannot train on it)
    return _loader(dataset, batch_size, sampler, num_workers(data_cfg) if workers is None else workers, device,
                   drop_last)


def _sampler_kwargs(sampler_cfg: DictConfig, table: TaskTable) -> dict:
    return {"task_names": table.task_names} if "tasks" in sampler_cfg else {}


def eval_loader(table: TaskTable, data_cfg: DictConfig, batch_size: int, device: str, split: str = "val",
                workers: int | None = None, rank: int = 0, world_size: int = 1,
                dataset: Dataset | None = None) -> DataLoader:
    """Every image of `split` in a fixed order; with world_size > 1, this rank's disjoint shard of it.
    `dataset`: other items of the split's rows in its place (e.g. precomputed features)."""
    if dataset is None:
        dataset = PaintingDataset(table, split, transform_from_config(data_cfg, train=False),
                                  min_decode_side(data_cfg))
    sampler = ShardSampler(len(dataset), rank, world_size) if world_size > 1 else None
    return _loader(dataset, batch_size, sampler, num_workers(data_cfg) if workers is None else workers, device)
