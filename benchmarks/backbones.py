"""The backbone options of conf/backbone/ side by side: parameters, stages, token grid at an image size, the
optimizer's groups, and CPU inference speed of the whole model (backbone + BiLSTM + attention + heads, random
weights, fp32, eval mode).

    python benchmarks/backbones.py                          # every option, 224 px, batch 8, 1 thread
    python benchmarks/backbones.py --options vit_small swin_tiny --size 160 --threads 2
    python benchmarks/backbones.py --markdown               # the table of README / BENCHMARKS.md
    python benchmarks/backbones.py --counts-only --json counts.json   # the optimizer's groups alone (meta device)
    python benchmarks/backbones.py --markdown --before counts.json    # beside the counts of another checkout

The optimizer's groups: AdamW as a run of the option's own recipe builds it with every parameter trainable
(`phase=3`, the option's `backbone.lr_scale` / `backbone.layer_decay`, `optimizer.weight_decay` 0.05), the model
built on the meta device: how many learning rates (lr groups) and how many tensors get no weight decay. The count
uses only `build_model`, `apply_freezing` and `build_optimizer`, so it runs on older checkouts too
(`PYTHONPATH=<checkout> python benchmarks/backbones.py --counts-only --json before.json`).

Each option is timed over `--batches` batches after one warm-up batch (median batch time -> img/s). The figures
depend on the CPU and on what else runs: the script prints the CPU, the thread count and the load average
before and after timing, and BENCHMARKS.md records them beside the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from deepart.core.config import CONF_DIR, compose_config
from deepart.models import build_model
from deepart.training.freezing import apply_freezing
from deepart.training.optim import build_optimizer

TASKS = {"style": [str(i) for i in range(27)], "genre": [str(i) for i in range(10)],
         "artist": [str(i) for i in range(23)]}


def config(option: str, size: int):
    return compose_config([f"backbone={option}", "backbone.pretrained=false", "backbone.weights=null",
                           f"data.image_size={size}", "logger=none"])


def optimizer_counts(option: str, size: int) -> dict:
    """The number of learning rates and of tensors without weight decay in the optimizer of the option's recipe,
    everything trainable (the model on the meta device)."""
    cfg = config(option, size)
    with torch.device("meta"):
        model = build_model(cfg, TASKS, pretrained=False)
    apply_freezing(model, [], 0)
    groups = build_optimizer(cfg.optimizer, [model], 1e-3, torch.device("cpu")).param_groups
    return {"lr_groups": len({g["lr"] for g in groups}),
            "no_wd": sum(len(g["params"]) for g in groups if not g["weight_decay"])}


def measure(option: str, size: int, batch: int, batches: int) -> dict:
    cfg = config(option, size)
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
    parser.add_argument("--counts-only", action="store_true", help="the optimizer's groups alone, no timing")
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--before", help="JSON of --counts-only from another checkout: its counts beside these")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = args.options or sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml"))
    before = json.loads(open(args.before).read()) if args.before else {}
    if not args.counts_only:
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
              f"{args.threads} thread(s), batch {args.batch}, {args.size} px; load before {os.getloadavg()[0]:.2f}")
    rows = []
    for option in options:
        row = optimizer_counts(option, args.size)
        if not args.counts_only:
            row.update(measure(option, args.size, args.batch, args.batches))
        row["option"] = option
        rows.append(row)
        if not args.markdown:
            print(f"{option:18s} lr groups {row['lr_groups']:3d}  no weight decay {row['no_wd']:4d}" +
                  ("" if args.counts_only else
                   f"  {row['timm']:48s} {row['params_m']:7.1f}M  {row['stages']} stages  grid {row['grid']:6s} "
                   f"{row['img_s']:7.1f} img/s"), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({r["option"]: r for r in rows}, f, indent=1)
    if not args.counts_only:
        print(f"# load after {os.getloadavg()[0]:.2f}")
    if args.markdown and not args.counts_only:
        def pair(r: dict, key: str) -> str:
            old = before.get(r["option"], {}).get(key)
            return str(r[key]) if old is None else f"{old} -> {r[key]}"

        print(f"| option | timm model | backbone params | stages | lr groups | tensors without weight decay "
              f"| tokens at {args.size} px | CPU img/s |")
        print("|---|---|---:|---:|---:|---:|---|---:|")
        for r in rows:
            print(f"| `{r['option']}` | `{r['timm']}` | {r['params_m']:.1f}M | {r['stages']} | {pair(r, 'lr_groups')} "
                  f"| {pair(r, 'no_wd')} | {r['grid']} | {r['img_s']:.1f} |")


if __name__ == "__main__":
    main()
