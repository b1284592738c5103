"""The preprocessing cache: resized copies of a dataset's images, written once by `prepare_cache`
(`python -m deepart prepare`, whose help describes the layout) and read automatically.

At training time (`data.cache=auto`) `use_cache` swaps in the copies when the manifest covers every image
of the table with matching source size/mtime and the same resize settings; otherwise it logs why and
reads the originals. The random-resized crop of training then works on the 256-px copy (with a warning when the
copy is no larger than the crop).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from deepart.core.errors import ConfigError
from deepart.core.files import atomic_write, atomic_write_text
from deepart.data.images import ImageLoadError, load_image, source_file
from deepart.data.table import TaskTable
from deepart.data.transforms import SquarePad, resize_size

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
JPEG_QUALITY = 93
CACHE_MODES = ("auto", "off", "require")


def settings(data_cfg) -> dict:
    """The parameters a cache is made for (a cache made differently is not used)."""
    return {"resize": resize_size(data_cfg["image_size"], data_cfg.get("resize_size")),
            "square_pad": bool(data_cfg.square_pad), "quality": JPEG_QUALITY}


def cache_dir(table: TaskTable, data_cfg) -> Path:
    """<cache_dir>/<image folder name>-<hash of its absolute path>/<s256 | sq256>."""
    root = Path(os.path.abspath(table.image_root))
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    s = settings(data_cfg)
    name = root.name if root.name not in ("images", "") else f"{root.parent.name}-{root.name}"
    variant = f"{'sq' if s['square_pad'] else 's'}{s['resize']}"
    return Path(data_cfg.get("cache_dir") or "data/cache") / f"{name}-{tag}" / variant


def cached_name(path: str) -> str:
    """Where the copy of `path` lives inside the cache (always a .jpg)."""
    rel = path.lstrip("/") if os.path.isabs(path) else path
    return rel if rel.lower().endswith((".jpg", ".jpeg")) else rel + ".jpg"


def _stamp(path: Path) -> list[int]:
    """Size and mtime of the file that holds the image (for a parquet row: its shard)."""
    st = source_file(path).stat()
    return [st.st_size, st.st_mtime_ns]


def resize_copy(img: Image.Image, size: int, square_pad: bool) -> Image.Image:
    """Shorter side -> size (never enlarged); with square_pad, padded to a square of side `size`."""
    if square_pad:
        img = SquarePad()(img)
    w, h = img.size
    scale = size / min(w, h)
    if scale < 1:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC, reducing_gap=3.0)
    return img


def _work(job: tuple[str, str, str, int, bool]) -> tuple[str, list[int] | None, str | None]:
    """Make one copy (in a worker process). Returns (path, source stamp, error)."""
    path, src, dst, size, square_pad = job
    src_p, dst_p = Path(src), Path(dst)
    try:
        stamp = _stamp(src_p)
        if dst_p.is_file() and dst_p.stat().st_mtime_ns >= stamp[1]:
            return path, stamp, None  # done by an earlier (interrupted) run
        img = resize_copy(load_image(src, size), size, square_pad)
        dst_p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dst_p, lambda f: img.save(f, "JPEG", quality=JPEG_QUALITY))
        return path, stamp, None
    except (ImageLoadError, OSError) as exc:
        return path, None, str(exc)


def all_paths(table: TaskTable) -> list[str]:
    return list(pd.unique(pd.concat([table.frame(s)["path"] for s in table.splits], ignore_index=True)))


def prepare_cache(table: TaskTable, data_cfg, workers: int | None = None, progress: bool = True) -> dict:
    """Write (or complete) the cache of every image of `table`; returns the summary stored in the manifest."""
    out = cache_dir(table, data_cfg)
    out.mkdir(parents=True, exist_ok=True)
    s = settings(data_cfg)
    paths = all_paths(table)
    jobs = [(p, str(table.resolve(p)), str(out / cached_name(p)), s["resize"], s["square_pad"]) for p in paths]
    workers = workers or min(8, os.cpu_count() or 1)
    files, bad = {}, {}
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) if workers > 1 else _Serial() as pool:
        results = pool.map(_work, jobs, chunksize=64)
        for path, stamp, error in tqdm(results, total=len(jobs), desc=f"caching {len(jobs)} images",
                                       unit="img", disable=not progress):
            if error is None:
                files[path] = stamp
            else:
                bad[path] = error
    manifest = {"image_root": str(Path(os.path.abspath(table.image_root))), **s, "files": files, "bad": bad}
    atomic_write_text(out / MANIFEST, json.dumps(manifest))
    summary = {"cache": str(out), "images": len(files), "bad": len(bad), "seconds": time.perf_counter() - started}
    if bad:
        log.warning("%d unreadable images are not cached (they will be skipped in training), e.g. %s",
                    len(bad), next(iter(bad.values())))
    return summary


class _Serial:
    """In-process stand-in for a pool (one worker)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items, **_):
        return map(fn, items)


def cache_status(table: TaskTable, data_cfg) -> tuple[Path, dict | None, str]:
    """(cache folder, manifest or None, reason it cannot be used or '')."""
    out = cache_dir(table, data_cfg)
    path = out / MANIFEST
    if not path.is_file():
        return out, None, f"no cache at {out}"
    manifest = json.loads(path.read_text())
    wanted = {"image_root": str(Path(os.path.abspath(table.image_root))), **settings(data_cfg)}
    changed = [k for k, v in wanted.items() if manifest.get(k) != v]
    if changed:
        return out, None, f"cache at {out} was made with other settings ({', '.join(changed)})"
    files, bad = manifest["files"], manifest["bad"]
    stale = 0
    for p in all_paths(table):
        if p in bad:
            continue
        if p not in files:
            return out, None, f"cache at {out} lacks {p}"
        try:
            if _stamp(table.resolve(p)) != files[p]:
                stale += 1
        except OSError:
            stale += 1
    if stale:
        return out, None, f"cache at {out} is out of date ({stale} source images changed)"
    return out, manifest, ""


def use_cache(table: TaskTable, data_cfg) -> TaskTable:
    """The table reading the cached copies when `data.cache` allows and the cache is up to date."""
    mode = data_cfg.cache
    if mode == "off":
        return table
    out, manifest, reason = cache_status(table, data_cfg)
    if manifest is None:
        hint = "run `python -m deepart prepare <the same data overrides>` to build it"
        if mode == "require":
            raise ConfigError(f"data.cache=require but {reason}; {hint}")
        log.info("data: reading original images (%s; %s)", reason, hint)
        return table
    bad = manifest["bad"]

    def remap(frame: pd.DataFrame) -> pd.DataFrame:
        # unreadable originals stay as they are: they are skipped and counted while reading
        return frame.assign(path=[str(table.resolve(p)) if p in bad else cached_name(p) for p in frame["path"]])

    log.info("data: using the preprocessed cache %s (%d images)", out, len(manifest["files"]))
    size, crop = settings(data_cfg)["resize"], int(data_cfg["image_size"])
    if size <= crop:
        log.warning("data: the cached copies are %d px, no larger than the %d-px training crops, so every random "
                    "crop is enlarged from a smaller image than the original; for the best accuracy use "
                    "data.cache=off or a cache built with data.resize_size above data.image_size", size, crop)
    return TaskTable(remap(table.train), remap(table.val), table.tasks, out, list(table.notes),
                     None if table.test is None else remap(table.test))
