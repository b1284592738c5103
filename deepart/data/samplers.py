"""Epoch-seeded samplers. Each yields `(index, seed)` pairs: the draw of an epoch is a pure function of
(seed, epoch), so a resumed run sees the same images and augmentations as an uninterrupted one, and with
`rank`/`world_size` each process takes a disjoint share of the same draw."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from deepart.core.errors import require
from deepart.data.table import MISSING


class _EpochSampler(Sampler):
    def __init__(self, num_items: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.num_items = num_items
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def _draw(self, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return -(-self.num_items // self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = self._generator()
        order = self._draw(gen)
        seeds = torch.randint(0, 2**31 - 1, (len(order),), generator=gen)
        total = len(self) * self.world_size
        if len(order) < total:  # pad so every rank gets the same number of items
            order = torch.cat([order, order[: total - len(order)]])
            seeds = torch.cat([seeds, seeds[: total - len(seeds)]])
        for i in range(self.rank, total, self.world_size):
            yield int(order[i]), int(seeds[i])


class RandomEpochSampler(_EpochSampler):
    """A uniform random permutation per epoch."""

    def __init__(self, labels: np.ndarray, seed: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__(len(labels), seed, rank, world_size)

    def _draw(self, gen: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.num_items, generator=gen)


def inverse_frequency_weights(labels: np.ndarray, power: float = 1.0,
                              task_columns: list[int] | None = None) -> np.ndarray:
    """Per-image sampling weights from an (N, T) label matrix (-1 = missing).

    For each task t, an image with class c gets w_t = (n_t / (C_t * count_t(c))) ** power, where n_t is
    the number of images labelled for t and C_t the number of classes present: 1 for every image of a
    balanced task, > 1 for rare classes. An image's weight is the mean of w_t over the tasks it is
    labelled for (images with no label in the balanced tasks get weight 1). Drawing with these weights
    makes every class of a task about equally frequent when tasks do not conflict; when they do, the
    mean is a compromise between them.
    """
    labels = np.asarray(labels)
    columns = range(labels.shape[1]) if task_columns is None else task_columns
    total = np.zeros(len(labels))
    count = np.zeros(len(labels))
    for t in columns:
        y = labels[:, t]
        mask = y != MISSING
        if not mask.any():
            continue
        classes, inverse, counts = np.unique(y[mask], return_inverse=True, return_counts=True)
        w = (mask.sum() / (len(classes) * counts[inverse])) ** power
        total[mask] += w
        count[mask] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 1.0)


class WeightedTaskSampler(_EpochSampler):
    """Draws len(labels) images per epoch with replacement, weighted by `inverse_frequency_weights`."""

    def __init__(self, labels: np.ndarray, task_names: list[str] | None = None, power: float = 1.0,
                 tasks: list[str] | None = None, seed: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__(len(labels), seed, rank, world_size)
        columns = None
        if tasks is not None:
            names = list(task_names or [])
            require(all(t in names for t in tasks), "sampler.tasks", list(tasks),
                    f"null or a list of the dataset's tasks {names}")
            columns = [names.index(t) for t in tasks]
        self.weights = torch.as_tensor(inverse_frequency_weights(labels, power, columns), dtype=torch.double)

    def _draw(self, gen: torch.Generator) -> torch.Tensor:
        return torch.multinomial(self.weights, self.num_items, replacement=True, generator=gen)


class ShardSampler(Sampler):
    """Items rank, rank + world_size, ... of a fixed order: disjoint shards that together cover every
    item exactly once (no padding, so metrics summed over ranks equal a single-process pass)."""

    def __init__(self, num_items: int, rank: int = 0, world_size: int = 1):
        self.indices = range(rank, num_items, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
