"""The multi-task image table every data source produces and every model and loader consumes."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deepart.core.errors import DataError, require_choice

log = logging.getLogger(__name__)

MISSING = -1  # label of an image that has no label for a task
MISSING_IMAGES = ("error", "skip", "ignore")  # data.source.missing_images: listed images not on disk


@dataclass
class TaskTable:
    """Images with one integer label per task (-1 = no label for that task).

    `train` / `val` (and optionally `test`) have a `path` column (relative to `image_root`, or absolute)
    and one int column per task, in the order of `tasks`. `tasks` maps each task name to its class names
    (index = label). `notes` collects facts worth logging at start-up (e.g. images excluded from train).
    """

    train: pd.DataFrame
    val: pd.DataFrame
    tasks: dict[str, list[str]]
    image_root: Path
    notes: list[str] = field(default_factory=list)
    test: pd.DataFrame | None = None

    @property
    def splits(self) -> list[str]:
        return ["train", "val"] + (["test"] if self.test is not None else [])

    def frame(self, split: str) -> pd.DataFrame:
        if split not in self.splits:
            raise DataError(f"split {split!r}: this dataset has only {' / '.join(self.splits)}")
        return getattr(self, split)

    def __post_init__(self) -> None:
        for split in self.splits:
            frame = self.frame(split)
            missing = [c for c in ["path", *self.tasks] if c not in frame.columns]
            if missing:
                raise DataError(f"{split} table lacks columns {missing}")
            for task, classes in self.tasks.items():
                labels = frame[task].to_numpy()
                bad = (labels < MISSING) | (labels >= len(classes))
                if bad.any():
                    row = int(np.flatnonzero(bad)[0])
                    raise DataError(f"{split} table: label {labels[row]} of task '{task}' for "
                                    f"{frame['path'].iloc[row]} is outside 0..{len(classes) - 1}")

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def labels(self, split: str) -> np.ndarray:
        """(N, T) int64 label matrix of a split."""
        return np.array(self.frame(split)[self.task_names], dtype=np.int64)  # a writable copy

    def select_tasks(self, names: list[str] | None) -> TaskTable:
        """Keep only some tasks (and only images that have a label for at least one of them)."""
        if names is None or list(names) == self.task_names:
            return self
        unknown = [n for n in names if n not in self.tasks]
        if unknown:
            raise DataError(f"data.tasks: unknown task(s) {unknown}; this dataset has {self.task_names}")
        keep = {n: self.tasks[n] for n in names}

        def cut(frame: pd.DataFrame) -> pd.DataFrame:
            frame = frame[["path", *keep]]
            return frame[(frame[list(keep)] != MISSING).any(axis=1)].reset_index(drop=True)

        return TaskTable(cut(self.train), cut(self.val), keep, self.image_root, list(self.notes),
                         None if self.test is None else cut(self.test))

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.image_root / p

    def summary(self) -> str:
        parts = [" / ".join(f"{len(self.frame(s))} {s}" for s in self.splits) + " images"]
        for task, classes in self.tasks.items():
            counts = " / ".join(f"{int((self.frame(s)[task] != MISSING).sum())} {s}" for s in self.splits)
            parts.append(f"{task}: {len(classes)} classes, {counts} labels")
        return "; ".join(parts)


def check_images(frames: list[pd.DataFrame], image_root: Path, policy: str,
                 get_them: str = "check the image folder") -> list[pd.DataFrame]:
    """Count listed images that are not on disk; raise (policy 'error'), drop them ('skip'), or do not
    look ('ignore': files that turn out missing are skipped and counted while reading)."""
    require_choice("data.source.missing_images", policy, MISSING_IMAGES)
    if policy == "ignore":
        return frames
    listed = pd.unique(pd.concat([f["path"] for f in frames], ignore_index=True))
    missing = [p for p in listed if not (Path(image_root) / p).is_file()]
    if not missing:
        return frames
    examples = ", ".join(missing[:5])
    if policy == "error":
        present = len(listed) - len(missing)
        raise DataError(
            f"{len(missing)} of {len(listed)} listed images are missing under {image_root} "
            f"(first: {examples}). To get them: {get_them} (docs/data.md)"
            + (f", or pass data.source.missing_images=skip to train on the {present} present ones."
               if present else "."))
    log.warning("%d of %d listed images are missing under %s and are skipped (first: %s)",
                len(missing), len(listed), image_root, examples)
    gone = set(missing)
    return [f[~f["path"].isin(gone)].reset_index(drop=True) for f in frames]
