"""Dataset over a TaskTable split: uint8 image tensors + a label vector; unreadable images are skipped."""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from deepart.data.images import ImageLoadError, load_rgb
from deepart.data.table import TaskTable

log = logging.getLogger(__name__)


class PaintingDataset(Dataset):
    """Items are dicts {image: uint8 (3,H,W), labels: int64 (T,), index: int}, or a `path` marker for a
    file that cannot be read (the collate function drops it and reports it).

    Keys may be plain indices or `(index, seed)` pairs from the project's samplers: the seed fixes the
    augmentation of that draw, so an epoch's images do not depend on worker count or on resuming.
    """

    def __init__(self, table: TaskTable, split: str, transform: Callable, min_side: int | None = None):
        frame = table.frame(split)
        self.paths = [str(table.resolve(p)) for p in frame["path"]]
        self.labels = torch.from_numpy(table.labels(split))
        self.transform = transform
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = (key, None) if isinstance(key, (int, np.integer)) else key
        try:
            img = load_rgb(self.paths[index], self.min_side)
        except ImageLoadError as exc:
            return {"bad": self.paths[index], "error": str(exc)}
        if seed is not None:
            torch.manual_seed(seed)
        return {"image": self.transform(img), "labels": self.labels[index], "index": index}


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
