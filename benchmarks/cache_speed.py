"""Data-loading throughput of one training epoch with and without the preprocessing cache.

    python benchmarks/cache_speed.py [--images 200] [--size 1600x1200] [--workers 2]

Writes full-size JPEGs (painting-like: smooth colour fields plus brush-scale noise) as an image folder in
a temporary directory, then times one epoch of the training DataLoader (decode, random-resized crop to
224, flip, collate) reading the originals, builds the cache with `deepart.data.prepare`, and times the
same epoch reading the 256-px copies. Prints images/s of each and the speed-up.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepart.core.config import compose_config  # noqa: E402
from deepart.data.cache import prepare_cache  # noqa: E402
from deepart.data.loaders import load_table, train_loader  # noqa: E402


def make_images(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        folder = root / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.stack([np.sin(xx / rng.uniform(50, 300) + c) * np.cos(yy / rng.uniform(50, 300))
                         for c in range(3)], -1)
        arr = (base * 90 + 128 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i}.jpg", quality=90)


def epoch_rate(cfg, cached: bool) -> float:
    table = load_table(cfg.data, cached=cached)
    table.val = table.val.iloc[:0]
    loader = train_loader(table, cfg.data, cfg.sampler, 32, seed=0, device="cpu")
    started, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch["index"])
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", default="1600x1200")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "paintings"
        make_images(root, args.images, size)
        mb = sum(p.stat().st_size for p in root.rglob("*.jpg")) / 2**20
        cfg = compose_config(["data=imagefolder", f"data.root={root}", f"data.cache_dir={Path(tmp) / 'cache'}",
                              "data.source.val_fraction=0.0001", f"data.num_workers={args.workers}",
                              "sampler=random"])
        print(f"{args.images} JPEGs of {size[0]}x{size[1]} ({mb:.0f} MB), DataLoader with {args.workers} "
              f"workers, train transform to {cfg.data.image_size}px")
        original = epoch_rate(cfg, cached=False)
        print(f"  originals: {original:7.1f} images/s")
        summary = prepare_cache(load_table(cfg.data, cached=False), cfg.data, workers=args.workers, progress=False)
        print(f"  building the cache: {summary['seconds']:.1f}s ({args.images / summary['seconds']:.1f} images/s)")
        cached = epoch_rate(cfg, cached=True)
        print(f"  cache:     {cached:7.1f} images/s")
        print(f"  speed-up:  {cached / original:.1f}x")


if __name__ == "__main__":
    main()
