"""The backbone options of conf/backbone/ side by side: parameters, stages, token grid at an image size, and CPU
inference speed of the whole model (backbone + BiLSTM + attention + heads, random weights, fp32, eval mode).

    python benchmarks/backbones.py                          # every option, 224 px, batch 8, 1 thread
    python benchmarks/backbones.py --options vit_small swin_tiny --size 160 --threads 2
    python benchmarks/backbones.py --markdown               # the table of README / BENCHMARKS.md

Each option is timed over `--batches` batches after one warm-up batch (median batch time -> img/s). The figures
depend on the CPU and on what else runs: the script prints the CPU, the thread count and the load average
before and after timing, and BENCHMARKS.md records them beside the table.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from deepart.core.config import CONF_DIR, compose_config
from deepart.models import build_model

TASKS = {"style": [str(i) for i in range(27)], "genre": [str(i) for i in range(10)],
         "artist": [str(i) for i in range(23)]}


def measure(option: str, size: int, batch: int, batches: int) -> dict:
    cfg = compose_config([f"backbone={option}", "backbone.pretrained=false", "backbone.weights=null",
                          f"data.image_size={size}", "logger=none"])
    model = build_model(cfg, TASKS, pretrained=False).eval()
    backbone = model.backbone
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    with torch.inference_mode():
        grid = tuple(backbone(model.normalize(images[:1])).shape[2:])
        model(images)  # warm-up
        times = []
        for _ in range(batches):
            start = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - start)
    return {"option": option, "timm": backbone.name,
            "params_m": sum(p.numel() for p in backbone.parameters()) / 1e6,
            "stages": backbone.num_stages, "grid": f"{grid[0]}x{grid[1]}",
            "img_s": batch / statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--options", nargs="*", help="conf/backbone options (default: all)")
    parser.add_argument("--size", type=int, default=224, help="image size in px (default 224)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per option (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = args.options or sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml"))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.threads} thread(s), batch {args.batch}, {args.size} px; load before {os.getloadavg()[0]:.2f}")
    rows = []
    for option in options:
        row = measure(option, args.size, args.batch, args.batches)
        rows.append(row)
        if not args.markdown:
            print(f"{row['option']:18s} {row['timm']:48s} {row['params_m']:7.1f}M  {row['stages']} stages  "
                  f"grid {row['grid']:6s} {row['img_s']:7.1f} img/s", flush=True)
    print(f"# load after {os.getloadavg()[0]:.2f}")
    if args.markdown:
        print(f"| option | timm model | backbone params | stages | tokens at {args.size} px | CPU img/s |")
        print("|---|---|---:|---:|---|---:|")
        for r in rows:
            print(f"| `{r['option']}` | `{r['timm']}` | {r['params_m']:.1f}M | {r['stages']} | {r['grid']} | "
                  f"{r['img_s']:.1f} |")


if __name__ == "__main__":
    main()
