"""Your own collection as folders of images, one folder per class (`data=imagefolder data.root=<dir>`).

    <root>/<class>/<image>            one task (named by data.task_name), classes = folder names
    <root>/train/<class>/...  and  <root>/val/<class>/...     used as the split when both exist
Without a val folder, val is a stratified `val_fraction` of each class, drawn with `seed`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from deepart.core.errors import ConfigError, DataError, require
from deepart.data.splits import check_fractions, stratified_split
from deepart.data.table import TaskTable

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _visible(path: Path, base: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(base).parts)


def scan_classes(folder: Path, extensions=IMAGE_EXTENSIONS) -> dict[str, list[Path]]:
    """Class folder name -> image files under it (recursively, hidden files skipped, sorted)."""
    exts = {e.lower() for e in extensions}
    found = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.rglob("*") if p.suffix.lower() in exts and p.is_file() and _visible(p, folder))
        if files:
            found[sub.name] = files
    return found


def load_image_folder(root: str | Path, task_name: str = "label", tasks: list[str] | None = None,
                      val_root: str | Path | None = None, val_fraction: float = 0.2, seed: int = 0,
                      extensions: list[str] | tuple[str, ...] = IMAGE_EXTENSIONS) -> TaskTable:
    """A one-task TaskTable from class folders (see module doc)."""
    if root in (None, "", "???"):
        raise ConfigError("data.root is not set: pass data.root=<folder with one sub-folder per class>")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root={root}: folder not found")
    require(not tasks or list(tasks) == [task_name], "data.tasks", list(tasks or []),
            f"null or ['{task_name}'] (an image folder has the single task '{task_name}'; rename it with "
            f"data.task_name=...)")
    if val_root is None and (root / "train").is_dir() and (root / "val").is_dir():
        root, val_root = root / "train", root / "val"
    train_files = scan_classes(root, extensions)
    if not train_files:
        raise DataError(f"{root}: no class folders with images ({', '.join(extensions)}) found; expected "
                        f"{root}/<class name>/<image>")
    notes = []
    base = Path(os.path.abspath(root))
    if val_root is not None:
        val_root = Path(val_root)
        if not val_root.is_dir():
            raise DataError(f"data.source.val_root={val_root}: folder not found")
        val_files = scan_classes(val_root, extensions)
        base = Path(os.path.commonpath([base, os.path.abspath(val_root)]))
        classes = sorted(set(train_files) | set(val_files))
        unseen = sorted(set(val_files) - set(train_files))
        if unseen:
            notes.append(f"{len(unseen)} val class(es) have no training images: {', '.join(unseen[:5])}")
        frames = [_frame(train_files, classes, task_name, base), _frame(val_files, classes, task_name, base)]
        notes.append(f"{task_name}: train from {root}, val from {val_root}")
    else:
        check_fractions([1 - val_fraction, val_fraction], "data.source.val_fraction")
        classes = sorted(train_files)
        every = _frame(train_files, classes, task_name, base)
        split = stratified_split(every[task_name], [1 - val_fraction, val_fraction], seed)
        frames = [every[split == 0].reset_index(drop=True), every[split == 1].reset_index(drop=True)]
        notes.append(f"{task_name}: stratified split of {root} by seed {seed}: {len(frames[0])} train / "
                     f"{len(frames[1])} val")
    return TaskTable(frames[0], frames[1], {task_name: classes}, base, notes)


def _frame(files: dict[str, list[Path]], classes: list[str], task: str, base: Path) -> pd.DataFrame:
    """path (relative to `base`) + label column."""
    paths = [Path(os.path.relpath(p, base)).as_posix() for name in files for p in files[name]]
    labels = [classes.index(name) for name in files for _ in files[name]]
    return pd.DataFrame({"path": paths, task: np.asarray(labels, dtype=np.int64)})
