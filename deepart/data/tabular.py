"""Your own collection as a table (`data=csv data.table=<file> data.root=<dir>`).

A CSV (or TSV) with an image column and one column per task, e.g. a museum export

    ID, period, artist
    1021, Baroque, Rembrandt
    1022, Baroque,                 <- empty cell: no artist label for this image
Class names are the distinct values of each task column (sorted). Images are `image_dir/<value>`; a value
without a file extension is matched to `image_dir/<value>.<ext>` for any image extension. When the table
has a split column (values train / val / test) it is used; otherwise a stratified train/val/test split
is drawn with `seed` (stratified on the first task).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepart.core.errors import ConfigError, DataError, require, require_choice
from deepart.data.folder import IMAGE_EXTENSIONS
from deepart.data.splits import check_fractions, stratified_split
from deepart.data.table import MISSING, TaskTable, check_images

SPLITS = ("train", "val", "test")


def read_table(path: Path) -> pd.DataFrame:
    """Every cell as a stripped string ('' = empty); header names stripped too."""
    if not path.is_file():
        raise DataError(f"data.table={path}: file not found")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else None
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True,
                            engine="python", encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot read the table ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataError(f"{path}: the table has no rows")
    return frame.apply(lambda col: col.str.strip())


def _image_paths(ids: pd.Series, image_dir: Path) -> pd.Series:
    """Relative image paths; ids without an extension are matched to files `<id>.<image ext>`."""
    bare = ids.map(lambda v: Path(v).suffix.lower() not in IMAGE_EXTENSIONS)
    if not bare.any():
        return ids
    by_stem: dict[str, str] = {}
    if image_dir.is_dir():
        for p in sorted(image_dir.rglob("*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                rel = p.relative_to(image_dir)
                by_stem.setdefault(rel.with_suffix("").as_posix(), rel.as_posix())
    return ids.where(~bare, ids.map(lambda v: by_stem.get(v, v)))


def load_csv(table: str | Path, image_dir: str | Path, tasks: list[str] | None = None,
             image_column: str | None = None, split_column: str = "split",
             fractions: list[float] | tuple[float, ...] = (0.8, 0.1, 0.1), seed: int = 0,
             missing_images: str = "error") -> TaskTable:
    """A multi-task TaskTable from a table of images and labels (see module doc).

    `tasks`: the task columns (None = every column except the image and split columns).
    """
    if table in (None, "", "???") or image_dir in (None, "", "???"):
        raise ConfigError("data=csv needs data.table=<csv file> and data.root=<folder with the images>")
    table, image_dir = Path(table), Path(image_dir)
    frame = read_table(table)
    image_column = image_column or frame.columns[0]
    require_choice("data.source.image_column", image_column, list(frame.columns))
    has_split = split_column in frame.columns if split_column else False
    reserved = {image_column, split_column if has_split else None}
    tasks = list(tasks) if tasks else [c for c in frame.columns if c not in reserved]
    unknown = [t for t in tasks if t not in frame.columns or t in reserved]
    require(bool(tasks) and not unknown, "data.tasks", tasks,
            f"task columns of {table} (available: {[c for c in frame.columns if c not in reserved]})")
    _check_image_ids(frame[image_column], table, image_column)

    out, classes = _encode_labels(frame, tasks, table, pd.DataFrame({"path": _image_paths(frame[image_column],
                                                                                           image_dir)}))
    unlabelled = (out[tasks] == MISSING).all(axis=1)
    notes = []
    if unlabelled.any():
        notes.append(f"{int(unlabelled.sum())} row(s) of {table.name} have no label for any task and are not used")
    if has_split:
        split = _split_column(frame, split_column, table)
        notes.append(f"splits from column {split_column!r} of {table.name}")
    else:
        fractions = check_fractions(fractions, "data.source.fractions")
        split = stratified_split(out[tasks[0]], fractions, seed)
        notes.append(f"stratified {'/'.join(f'{f:g}' for f in fractions)} split on {tasks[0]!r} by seed {seed}")
    split = np.where(unlabelled.to_numpy(), -1, split)
    parts = [out[split == i].reset_index(drop=True) for i in range(3)]
    parts = check_images(parts, image_dir, missing_images, f"check data.root={image_dir}")
    test = parts[2] if len(parts[2]) else None
    return TaskTable(parts[0], parts[1], classes, image_dir, notes, test)


def _check_image_ids(ids: pd.Series, table: Path, image_column: str) -> None:
    """No empty and no repeated image cell (line numbers as an editor shows them: the header is line 1)."""
    empty = ids == ""
    if empty.any():
        raise DataError(f"{table}: row {int(np.flatnonzero(empty)[0]) + 2} has an empty {image_column!r} cell")
    repeated = ids[ids.duplicated()]
    if len(repeated):
        first = repeated.iloc[0]
        rows = [int(i) + 2 for i in np.flatnonzero(ids == first)]
        raise DataError(f"{table}: {len(repeated)} image(s) listed more than once, e.g. {first!r} on lines {rows}")


def _encode_labels(frame: pd.DataFrame, tasks: list[str], table: Path,
                   out: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """`out` with one integer column per task (class index in sorted class names; MISSING for an empty cell)."""
    classes = {}
    for task in tasks:
        values = frame[task]
        classes[task] = sorted(v for v in values.unique() if v != "")
        if not classes[task]:
            raise DataError(f"{table}: column {task!r} has no labels")
        index = {name: i for i, name in enumerate(classes[task])}
        out[task] = values.map(lambda v, index=index: index.get(v, MISSING)).astype(np.int64)
    return out, classes


def _split_column(frame: pd.DataFrame, split_column: str, table: Path) -> np.ndarray:
    """The split index (0 train, 1 val, 2 test) of every row from the table's split column."""
    split = frame[split_column].str.lower()
    bad = ~split.isin(SPLITS)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{table}:{row + 2}: column {split_column!r} is {frame[split_column].iloc[row]!r}; "
                        f"expected one of {', '.join(SPLITS)}")
    return split.map(SPLITS.index).to_numpy()
