"""WikiArt from the Hugging Face parquet shards (`huggan/wikiart`): `data=hf_wikiart`.

Each shard has the columns `image` {bytes, path}, `artist`, `genre`, `style` (integer class labels). The class
names come from the shards' own features metadata (the `huggingface` key of the Arrow schema metadata, which
the `datasets` library writes: `{"info": {"features": {"style": {"_type": "ClassLabel", "names": [...]}}}}`).
A class named "Unknown ..." ("Unknown Artist", "Unknown Genre") is no class: its rows get label -1 for that
task, masked exactly like unlabelled ArtGAN images.

The data comes without a split: a split stratified by style, drawn with `seed`, holding out `val_fraction`,
is made once and saved as `split-val<fraction>-seed<seed>.csv` next to the shards (or at `split_file`), so
every run on that data uses the same split; the start-up notes (and so the run's log) name the file.

Images stay in the shards: a row is named `<shard>.parquet/<row>` and decoded inside the DataLoader workers
(deepart.data.rowstore: one row group in memory per worker). `python -m deepart prepare data=hf_wikiart`
writes them out as resized JPEGs once, which training then reads instead (sequential reads, much faster).
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from deepart.core.errors import ConfigError, DataError
from deepart.core.files import atomic_write_text
from deepart.data.rowstore import import_pyarrow, row_ref
from deepart.data.splits import stratified_split
from deepart.data.table import MISSING, TaskTable

TASKS = ("style", "genre", "artist")
IMAGE_COLUMN = "image"
SPLIT_COLUMNS = ["path", "split"]


def hub_caches() -> list[Path]:
    """Where the Hugging Face libraries keep downloaded files, most specific first: HF_HUB_CACHE, HF_HOME/hub,
    ~/.cache/huggingface/hub, and the `datasets` cache (HF_DATASETS_CACHE, HF_HOME/datasets, ...)."""
    home = Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    out = [os.environ.get("HF_HUB_CACHE"), os.environ.get("HUGGINGFACE_HUB_CACHE"), home / "hub",
           os.environ.get("HF_DATASETS_CACHE"), home / "datasets"]
    return [Path(p).expanduser() for p in out if p]


def find_cached_shards(repo_id: str) -> list[Path]:
    """The parquet shards of `repo_id` in a local Hugging Face cache (newest snapshot), or []. No network."""
    folder = "datasets--" + repo_id.replace("/", "--")
    for cache in hub_caches():
        snapshots = sorted((cache / folder / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for snap in snapshots:
            shards = sorted(snap.rglob("*.parquet"))
            if shards:
                return shards
    return []


def find_shards(parquet: str | None, repo_id: str) -> list[Path]:
    """`data.root` (a folder, searched recursively, or a glob) or, when unset, the local HF cache."""
    if parquet:
        path = Path(parquet).expanduser()
        if path.is_dir():
            shards = sorted(path.rglob("*.parquet"))
        elif path.is_file():
            shards = [path]
        else:
            shards = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if p.endswith(".parquet"))
        if not shards:
            raise DataError(f"data.root={parquet}: no .parquet files there")
        return shards
    shards = find_cached_shards(repo_id)
    if not shards:
        looked = ", ".join(str(c) for c in hub_caches())
        raise DataError(f"data.root is not set and no parquet shards of {repo_id} are in the local Hugging Face "
                        f"cache (looked in {looked}). Pass data.root=<folder or glob of the shards>, or get "
                        f"them with `huggingface-cli download {repo_id} --repo-type dataset` (docs/data.md)")
    return shards


def class_names(schema, shard: Path, tasks: list[str]) -> dict[str, list[str]]:
    """Each task's ClassLabel names from the schema's Hugging Face features metadata."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        raise DataError(f"{shard}: no Hugging Face features metadata (schema key 'huggingface'), so the class "
                        f"names are unknown; write the shards with the `datasets` library")
    try:
        features = json.loads(raw)["info"]["features"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{shard}: unreadable Hugging Face features metadata ({exc})") from None
    out = {}
    for task in tasks:
        feature = features.get(task) or {}
        names = feature.get("names")
        if feature.get("_type") != "ClassLabel" or not names:
            raise DataError(f"{shard}: column {task!r} is not a ClassLabel with names in the features metadata "
                            f"(got {feature or 'nothing'})")
        out[task] = [str(n) for n in names]
    return out


def is_unknown(name: str) -> bool:
    return name.strip().lower().startswith("unknown")


def remap(names: list[str]) -> tuple[list[str], np.ndarray]:
    """(class names without the "Unknown ..." ones, old label -> new label with -1 for those)."""
    keep = [i for i, n in enumerate(names) if not is_unknown(n)]
    table = np.full(len(names), MISSING, dtype=np.int64)
    table[keep] = np.arange(len(keep))
    return [names[i] for i in keep], table


def read_labels(shards: list[Path], root: Path, tasks: list[str]) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """One row per image of every shard: `path` (`<shard>.parquet/<row>`) and one label column per task."""
    pq = import_pyarrow()
    needed = [IMAGE_COLUMN, *tasks]
    names: dict[str, list[str]] | None = None
    frames = []
    for shard in shards:
        try:
            schema = pq.read_schema(shard)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a file that is not parquet
            raise DataError(f"{shard}: cannot read it as parquet ({exc})") from None
        missing = [c for c in needed if c not in schema.names]
        if missing:
            raise DataError(f"{shard}: has columns {schema.names}; data=hf_wikiart needs {needed} "
                            f"(missing: {missing})")
        shard_names = class_names(schema, shard, tasks)
        if names is None:
            names = shard_names
        elif shard_names != names:
            raise DataError(f"{shard}: its class names differ from those of {shards[0]}; use shards of one dataset")
        labels = pq.read_table(shard, columns=tasks).to_pandas()
        rel = shard.relative_to(root).as_posix()
        frame = pd.DataFrame({"path": [row_ref(rel, i) for i in range(len(labels))]})
        for task in tasks:
            values = labels[task].to_numpy(dtype=np.float64, na_value=np.nan)
            bad = ~np.isnan(values) & ((values < 0) | (values >= len(names[task])))
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DataError(f"{shard}: column {task!r} has value {int(values[row])} at row {row}, outside the "
                                f"{len(names[task])} classes of its features metadata (0..{len(names[task]) - 1})")
            _, table = remap(names[task])
            filled = np.where(np.isnan(values), -1, values).astype(np.int64)
            frame[task] = np.where(filled < 0, MISSING, table[np.clip(filled, 0, None)])
        frames.append(frame)
    assert names is not None
    return pd.concat(frames, ignore_index=True), {t: remap(names[t])[0] for t in tasks}


def split_path(root: Path, val_fraction: float, seed: int, split_file: str | None) -> Path:
    return Path(split_file) if split_file else root / f"split-val{val_fraction:g}-seed{seed}.csv"


def load_split(frame: pd.DataFrame, path: Path, val_fraction: float, seed: int, notes: list[str]) -> np.ndarray:
    """Split index per row (0 train, 1 val): read from `path`, or drawn (stratified by style) and saved there."""
    if path.is_file():
        saved = pd.read_csv(path, dtype={"path": str, "split": str})
        if list(saved.columns) != SPLIT_COLUMNS or set(saved["path"]) != set(frame["path"]):
            raise DataError(f"{path}: this split file does not match the data ({len(saved)} rows listed, the "
                            f"shards have {len(frame)}); delete it to draw a new split, or set "
                            f"data.source.split_file to another file")
        bad = sorted(set(saved["split"]) - {"train", "val"})
        if bad:
            raise DataError(f"{path}: split values must be train or val, got {bad[:3]}")
        split = frame["path"].map(dict(zip(saved["path"], saved["split"]))).to_numpy()
        notes.append(f"split: {path} (reused)")
        return (split == "val").astype(np.int64)
    if not 0 < val_fraction < 1:
        raise ConfigError(f"data.source.val_fraction={val_fraction}: expected a share between 0 and 1, e.g. 0.2")
    index = stratified_split(frame["style"], [1 - val_fraction, val_fraction], seed)
    out = pd.DataFrame({"path": frame["path"], "split": np.where(index == 1, "val", "train")})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, out.to_csv(index=False))
    except OSError as exc:
        raise DataError(f"cannot save the split next to the data at {path} ({exc}); set "
                        f"data.source.split_file=<a writable path>") from None
    notes.append(f"split: {path} (made now: val_fraction {val_fraction:g}, seed {seed}, stratified by style)")
    return index


def load_hf_wikiart(parquet: str | None = None, tasks: list[str] | None = None, repo_id: str = "huggan/wikiart",
                    val_fraction: float = 0.2, seed: int = 0, split_file: str | None = None) -> TaskTable:
    """The TaskTable of the Hugging Face WikiArt shards (see the module doc)."""
    tasks = list(tasks or TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise DataError(f"data.tasks: unknown task(s) {unknown}; the parquet WikiArt has {list(TASKS)}")
    shards = find_shards(parquet, repo_id)
    root = Path(os.path.commonpath([str(s.resolve().parent) for s in shards]))
    shards = [s.resolve() for s in shards]
    columns = list(dict.fromkeys(["style", *tasks]))  # the split is stratified by style
    frame, classes = read_labels(shards, root, columns)
    notes = [f"parquet: {len(shards)} shard(s) under {root}, {len(frame)} rows"]
    for task in tasks:
        n = int((frame[task] == MISSING).sum())
        if n:
            notes.append(f"{task}: {n} rows labelled with an 'Unknown' class are unlabelled for this task")
    split = load_split(frame, split_path(root, val_fraction, seed, split_file), val_fraction, seed, notes)
    frame = frame[["path", *tasks]]
    train = frame[split == 0].reset_index(drop=True)
    val = frame[split == 1].reset_index(drop=True)
    return TaskTable(train, val, {t: classes[t] for t in tasks}, root, notes)
