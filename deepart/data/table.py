"""The multi-task image table every data source produces and every model and loader consumes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deepart.errors import DataError

MISSING = -1  # label of an image that has no label for a task


@dataclass
class TaskTable:
    """Images with one integer label per task (-1 = no label for that task).

    `train` / `val` have a `path` column (relative to `image_root`, or absolute) and one int column per
    task, in the order of `tasks`. `tasks` maps each task name to its class names (index = label).
    `notes` collects facts worth logging at start-up (e.g. images excluded from train).
    """

    train: pd.DataFrame
    val: pd.DataFrame
    tasks: dict[str, list[str]]
    image_root: Path
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for split, frame in (("train", self.train), ("val", self.val)):
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
        frame = self.train if split == "train" else self.val
        return frame[self.task_names].to_numpy(dtype=np.int64)

    def select_tasks(self, names: list[str] | None) -> "TaskTable":
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

        return TaskTable(cut(self.train), cut(self.val), keep, self.image_root, list(self.notes))

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.image_root / p

    def summary(self) -> str:
        parts = [f"{len(self.train)} train / {len(self.val)} val images"]
        for task, classes in self.tasks.items():
            n_tr = int((self.train[task] != MISSING).sum())
            n_va = int((self.val[task] != MISSING).sum())
            parts.append(f"{task}: {len(classes)} classes, {n_tr} train / {n_va} val labels")
        return "; ".join(parts)
