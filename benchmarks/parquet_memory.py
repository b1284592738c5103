"""Peak memory of one training epoch over a Hugging Face-style parquet (data=hf_wikiart).

    python benchmarks/parquet_memory.py [--rows 3000] [--row-group 100] [--size 640x480] [--workers 2]

Writes (in a child process, so its memory is not counted) a parquet shard with the schema of huggan/wikiart:
`--rows` painting-like JPEGs of `--size`, `--row-group` rows per row group (the `datasets` library writes 100
for image datasets). Then runs one epoch of the real training DataLoader (data=hf_wikiart, random sampler,
decode + random-resized crop to 224 + collate, `--workers` processes) and prints the parquet size, the
row-group size, and the peak RSS (VmHWM) of the main process and of each worker. Images are decoded from
the row bytes inside the workers, each holding at most one row group, so a worker's peak should follow the
row-group size, not the shard size.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_shard(path: str, rows: int, row_group: int, size: tuple[int, int], seed: int = 0) -> None:
    """Painting-like JPEGs (smooth colour fields + brush-scale noise) in the hub dataset's schema."""
    import io
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    names = {"style": [f"style_{i}" for i in range(27)],
             "genre": [f"genre_{i}" for i in range(10)] + ["Unknown Genre"],
             "artist": ["Unknown Artist"] + [f"artist_{i}" for i in range(128)]}
    features = {"image": {"_type": "Image"}, **{k: {"names": v, "_type": "ClassLabel"} for k, v in names.items()}}
    schema = pa.schema([pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        *(pa.field(k, pa.int64()) for k in names)],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, row_group):
            batch = {"image": [], **{k: [] for k in names}}
            for _ in range(start, min(rows, start + row_group)):
                base = rng.uniform(0, 255, 3)
                grad = np.stack([np.sin(xx / rng.uniform(40, 200) + c) * 60 + np.cos(yy / rng.uniform(40, 200)) * 60
                                 for c in range(3)], axis=-1)
                img = np.clip(base + grad + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, "JPEG", quality=90)
                batch["image"].append({"bytes": buf.getvalue(), "path": None})
                for k, v in names.items():
                    batch[k].append(int(rng.integers(0, len(v))))
            writer.write_table(pa.table(batch, schema=schema), row_group_size=row_group)


def vm_hwm_mib(pid: int | str = "self") -> float:
    """Peak resident set size of a process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--row-group", type=int, default=100)
    parser.add_argument("--size", default="640x480", help="WxH of the JPEGs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work-dir", default=None, help="where to write the parquet (default: a temporary folder)")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.work_dir or tmp) / "hf-wikiart"
        folder.mkdir(parents=True, exist_ok=True)
        shard = folder / "train-00000-of-00001.parquet"
        started = time.perf_counter()
        writer = mp.get_context("spawn").Process(target=write_shard,
                                                 args=(str(shard), args.rows, args.row_group, (w, h)))
        writer.start()
        writer.join()
        if writer.exitcode:
            raise SystemExit(f"writing the parquet failed (exit {writer.exitcode})")
        write_s = time.perf_counter() - started

        import pyarrow.parquet as pq

        from deepart.core.config import compose_config
        from deepart.data.loaders import load_table, train_loader

        meta = pq.ParquetFile(shard).metadata
        parquet_mib = shard.stat().st_size / 2**20
        group_bytes = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
        cfg = compose_config(["data=hf_wikiart", f"data.root={folder}", "data.cache=off",
                              f"data.num_workers={args.workers}", "sampler=random"])
        table = load_table(cfg.data)
        before = vm_hwm_mib()
        loader = train_loader(table, cfg.data, cfg.sampler, args.batch_size, seed=0, device="cpu")
        it = iter(loader)
        images, skipped = 0, 0
        started = time.perf_counter()
        for batch in it:
            images += len(batch["index"])
            skipped += len(batch["bad"])
        epoch_s = time.perf_counter() - started
        workers = [vm_hwm_mib(p.pid) for p in getattr(it, "_workers", [])]
        main_peak = vm_hwm_mib()
        del it, loader

    report = {"rows": args.rows, "image_size": f"{w}x{h}", "parquet_mib": parquet_mib,
              "row_groups": meta.num_row_groups, "row_group_rows": args.row_group,
              "row_group_mib": max(group_bytes) / 2**20, "workers": args.workers, "epoch_images": images,
              "skipped": skipped, "epoch_s": epoch_s, "main_peak_mib_before_epoch": before,
              "main_peak_mib": main_peak, "worker_peak_mib": workers, "write_s": write_s}
    print(f"parquet: {report['parquet_mib']:.0f} MiB, {args.rows} rows of {w}x{h} JPEGs, {meta.num_row_groups} row "
          f"groups of {args.row_group} rows (largest {report['row_group_mib']:.1f} MiB)")
    print(f"one epoch: {images} images ({skipped} skipped) in {epoch_s:.1f}s with {args.workers} workers, "
          f"batch {args.batch_size}, 224-px random-resized crops")
    print(f"peak RSS: main process {main_peak:.0f} MiB ({before:.0f} MiB before the epoch); workers "
          + ", ".join(f"{m:.0f} MiB" for m in workers))
    return report


if __name__ == "__main__":
    main()
