"""Datasets of image files: uint8 image tensors + a label vector; unreadable images are skipped and counted."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from deepart.data.images import ImageLoadError, load_image
from deepart.data.table import TaskTable

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """Items are dicts {image: uint8 (3,H,W), labels: int64 (T,), index: int}, or a `bad` marker for a
    file that cannot be read (the collate function drops it and reports it).

    Keys may be plain indices or `(index, seed)` pairs from the project's samplers: the seed fixes the
    augmentation of that draw, so an epoch's images do not depend on worker count or on resuming.
    """

    def __init__(self, paths: list[str], labels: torch.Tensor | None, transform: Callable,
                 min_side: int | None = None):
        self.paths = [str(p) for p in paths]
        self.labels = labels if labels is not None else torch.zeros(len(self.paths), 0, dtype=torch.long)
        self.transform = transform
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = (key, None) if isinstance(key, (int, np.integer)) else key
        try:
            img = load_image(self.paths[index], self.min_side)
        except ImageLoadError as exc:
            return {"bad": self.paths[index], "error": str(exc)}
        if seed is None:
            image = self.transform(img)
        else:  # the draw's own augmentation; the process's RNG (dropout, with 0 workers) is left as it was
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                image = self.transform(img)
        return {"image": image, "labels": self.labels[index], "index": index}


class PaintingDataset(ImageDataset):
    """One split of a TaskTable."""

    def __init__(self, table: TaskTable, split: str, transform: Callable, min_side: int | None = None):
        frame = table.frame(split)
        super().__init__([str(table.resolve(p)) for p in frame["path"]], torch.from_numpy(table.labels(split)),
                         transform, min_side)


def collate(items: list[dict]) -> dict:
    """Stack the readable items; unreadable ones are listed under `bad` as (path, error)."""
    good = [it for it in items if "bad" not in it]
    batch = {
        "bad": [(it["bad"], it["error"]) for it in items if "bad" in it],
        "index": torch.tensor([it["index"] for it in good], dtype=torch.long),
    }
    if good:
        batch["image"] = torch.stack([it["image"] for it in good])
        batch["labels"] = torch.stack([it["labels"] for it in good])
    return batch


class SkipCounter:
    """Counts the unreadable images that batches report, warning for the first `max_warnings` (all of
    them when None); with `keep_files` it also keeps their (path, error) pairs in `files`."""

    def __init__(self, max_warnings: int | None = 10, keep_files: bool = False):
        self.total = 0
        self.max_warnings = max_warnings
        self.files: list[tuple[str, str]] | None = [] if keep_files else None

    def add(self, bad: list[tuple[str, str]]) -> None:
        for path, error in bad:
            self.total += 1
            if self.files is not None:
                self.files.append((path, error))
            if self.max_warnings is None or self.total <= self.max_warnings:
                log.warning("skipped unreadable image %s (%s)", path, error)
            elif self.total == self.max_warnings + 1:
                log.warning("more unreadable images are skipped; the count is reported per epoch")

    def readable(self, batches: Iterable[dict]) -> Iterator[dict]:
        """The batches that hold at least one readable image; every unreadable one is counted."""
        for batch in batches:
            self.add(batch["bad"])
            if "image" in batch:
                yield batch
