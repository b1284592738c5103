"""WikiArt with the ArtGAN splits (Tan et al.): parsing the published label files and joining the tasks.

Files (flat, as written by `python -m deepart download wikiart`):
    <root>/{style,genre,artist}_{train,val}.csv   <root>/{style,genre,artist}_class.txt
    <root>/images/<StyleFolder>/<file>.jpg          (paths in the CSVs are relative to images/)

Quirks of the real files handled here:
- style/genre rows are `path,label` with CRLF endings; artist rows are `path,,label` with LF endings,
  after a header line `(Path to image),, (Groundtruth class)` and a blank line;
- the style folder `Art_Nouveau_Modern/` holds class `Art_Nouveau` (folder != class name);
- a path may be listed twice in one file (genre_val.csv lists one painting as both cityscape and
  landscape): a single-task run keeps every row, exactly as published; the multi-task table has one
  row per image, so there a duplicate with conflicting labels is left unlabelled for that task;
- the three tasks' splits were drawn independently, so an image can be in one task's train split and
  another task's val split: multi-task train excludes every image that is in any val split;
- 709 style/genre paths are mojibake: UTF-8 names read as Latin-1 and lower-cased (`joaquín` is listed as
  `joaquã\xadn`, `georges-lacombe\xa0_` as `georges-lacombeâ\xa0_`); an image is looked up under the
  listed spelling first, then the repaired UTF-8 one (NFC, then NFD as macOS writes it).
"""
from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from deepart.core.errors import DataError
from deepart.data.archive import DAMAGED_FILE, read_damaged, read_state
from deepart.data.table import MISSING, TaskTable, check_images

log = logging.getLogger(__name__)

TASKS = ("style", "genre", "artist")
#: style class name -> folder that holds its images, where the two differ
STYLE_FOLDERS = {"Art_Nouveau": "Art_Nouveau_Modern"}


def read_class_list(path: Path) -> list[str]:
    """Class names from an ArtGAN class file (`<index> <name>` per line, indices 0..N-1 in order)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class list not found: {path}")
    names: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        index, _, name = line.partition(" ")
        if not index.isdigit() or not name.strip() or int(index) != len(names):
            raise DataError(f"{path}:{lineno}: expected '<{len(names)}> <class name>', got {line!r}")
        names.append(name.strip())
    if not names:
        raise DataError(f"{path} lists no classes")
    return names


def read_split(path: Path, num_classes: int) -> pd.DataFrame:
    """Every row of an ArtGAN split file, as a frame with columns `path`, `label`.

    Accepts `path,label` and `path,,label` rows, CRLF or LF endings, a UTF-8 BOM, a `(Path to image)`
    header and blank lines. Labels must be integers in 0..num_classes-1; errors name file and line.
    Rows are returned as published, repeated paths included (see `unique_labels`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    paths: list[str] = []
    labels: list[int] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.strip()
        if not line or (line.startswith("(") and not paths):
            continue
        image, sep, label = line.rpartition(",")
        image = image.rstrip(",").strip()
        label = label.strip()
        if not sep or not image:
            raise DataError(f"{path}:{lineno}: expected 'path,label' or 'path,,label', got {line!r}")
        try:
            value = int(label)
        except ValueError:
            raise DataError(f"{path}:{lineno}: label {label!r} is not an integer") from None
        if not 0 <= value < num_classes:
            raise DataError(f"{path}:{lineno}: label {value} is out of range 0..{num_classes - 1} "
                            f"(the class list has {num_classes} classes)")
        paths.append(image)
        labels.append(value)
    if not paths:
        raise DataError(f"{path} lists no images")
    return pd.DataFrame({"path": paths, "label": np.asarray(labels, dtype=np.int64)})


def unique_labels(frame: pd.DataFrame, name: str, notes: list[str]) -> pd.DataFrame:
    """One row per path: repeated identical rows collapse; a path listed with different labels gets
    label -1 (its ground truth is ambiguous). Each case is added to `notes`."""
    repeated = frame["path"].duplicated(keep=False)
    if not repeated.any():
        return frame
    labels_per_path = frame[repeated].groupby("path", sort=False)["label"].nunique()
    conflicting = labels_per_path[labels_per_path > 1].index
    out = frame.drop_duplicates("path").copy()
    out.loc[out["path"].isin(conflicting), "label"] = MISSING
    if len(conflicting):
        notes.append(f"{name}: {len(conflicting)} image(s) listed with different labels are left unlabelled "
                     f"for this task (e.g. {conflicting[0]})")
    identical = len(labels_per_path) - len(conflicting)
    if identical:
        notes.append(f"{name}: {identical} image(s) listed twice with the same label are used once")
    return out.reset_index(drop=True)


def _join(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Outer join of per-task (path, label) frames into one frame: path + one column per task."""
    table = None
    for task, frame in frames.items():
        frame = frame.rename(columns={"label": task})
        table = frame if table is None else table.merge(frame, on="path", how="outer", sort=False)
    for task in frames:
        table[task] = table[task].fillna(MISSING).astype(np.int64)
    return table.reset_index(drop=True)


_MOJIBAKE = re.compile(r"[\u00e2\u00e3][\u0080-\u00bf]")  # lower-cased lead byte C2/C3 + continuation byte


def repair_mojibake(path: str) -> str | None:
    """The UTF-8 spelling of a path listed as lower-cased Latin-1 mojibake, or None if it is not one."""
    if not _MOJIBAKE.search(path):
        return None
    upper = _MOJIBAKE.sub(lambda m: m.group(0)[0].upper() + m.group(0)[1], path)
    try:
        return upper.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None


def spellings(path: str) -> list[str]:
    """Names under which a listed image may be stored: as listed, repaired (NFC), repaired (NFD)."""
    out = [path]
    fixed = repair_mojibake(path)
    for candidate in (fixed, unicodedata.normalize("NFC", fixed or path), unicodedata.normalize("NFD", fixed or path)):
        if candidate and candidate not in out:
            out.append(candidate)
    return out


def resolve_spellings(frames: list[pd.DataFrame], image_root: Path, notes: list[str]) -> list[pd.DataFrame]:
    """Rename non-ASCII paths that are not on disk as listed to the spelling that is."""
    listed = pd.unique(pd.concat([f["path"] for f in frames], ignore_index=True))
    renames = {}
    for path in listed:
        if path.isascii() or (image_root / path).is_file():
            continue
        found = next((c for c in spellings(path)[1:] if (image_root / c).is_file()), None)
        if found:
            renames[path] = found
    if not renames:
        return frames
    notes.append(f"{len(renames)} listed paths are stored under their repaired UTF-8 spelling "
                 f"(e.g. {next(iter(renames))!r} -> {next(iter(renames.values()))!r})")
    return [f.assign(path=f["path"].replace(renames)) for f in frames]


def drop_damaged(frames: list[pd.DataFrame], root: Path, tasks: list[str], notes: list[str]) -> list[pd.DataFrame]:
    """Leave out the images listed in `<root>/damaged_images.csv` (under any of their spellings); the note
    counts them per task and split (train, val)."""
    damaged = read_damaged(root)
    if not damaged:
        return frames
    out, counts = [], []
    for frame in frames:
        hit = frame["path"].map(lambda p: any(n in damaged for n in ([p] if p.isascii() else spellings(p))))
        counts.append({t: int((frame.loc[hit, t] != MISSING).sum()) for t in tasks})
        out.append(frame[~hit].reset_index(drop=True))
    if any(any(c.values()) for c in counts):
        per_task = "; ".join(f"{t} {counts[0][t]} train / {counts[1][t]} val" for t in tasks)
        notes.append(f"damaged in the archive (listed in {Path(root) / DAMAGED_FILE}), left out: {per_task}")
    return out


def load_wikiart(root: str | Path, tasks: list[str] | None = None, missing_images: str = "error",
                 images_dir: str = "images") -> TaskTable:
    """Multi-task WikiArt table from the ArtGAN files under `root`.

    One task: exactly that task's published train/val split. Several tasks: val is the union of the
    tasks' val splits, each task labelled only from its own val file (so each task is scored on its own
    val split); train is the union of the train splits minus every image in any val split.
    """
    root = Path(root)
    tasks = list(tasks or TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise DataError(f"data.tasks: unknown WikiArt task(s) {unknown}; choose from {list(TASKS)}")
    if not root.is_dir():
        raise DataError(f"WikiArt folder not found: {root}. Run `python -m deepart download wikiart` "
                        f"or set data.root=<folder with the ArtGAN CSVs>.")
    classes = {t: read_class_list(root / f"{t}_class.txt") for t in tasks}
    notes: list[str] = []
    splits = {}
    for split in ("train", "val"):
        frames = {t: read_split(root / f"{t}_{split}.csv", len(classes[t])) for t in tasks}
        if len(tasks) > 1:
            frames = {t: unique_labels(f, f"{t}_{split}.csv", notes) for t, f in frames.items()}
        splits[split] = _join(frames)
    train_table, val_table = splits["train"], splits["val"]

    in_val = train_table["path"].isin(set(val_table["path"]))
    if in_val.any():
        notes.append(f"{int(in_val.sum())} images listed in a train split are in another task's val split "
                     f"and are excluded from train")
        train_table = train_table[~in_val].reset_index(drop=True)

    image_root = root / images_dir
    state = read_state(root)
    if state is not None and not state.get("complete"):
        raise DataError(f"the extraction of {state.get('archive')} into {image_root} was interrupted: run "
                        f"`python -m deepart download wikiart --root {root} --images` (or `--from <archive>`) "
                        f"again to finish it")
    train_table, val_table = drop_damaged([train_table, val_table], root, tasks, notes)
    if image_root.is_dir():
        train_table, val_table = resolve_spellings([train_table, val_table], image_root, notes)
    train_table, val_table = check_images([train_table, val_table], image_root, missing_images,
                                         "python -m deepart download wikiart --images")
    return TaskTable(train_table, val_table, classes, image_root, notes)
