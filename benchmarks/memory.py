"""GPU memory: evaluation throughput and peak memory at given batch sizes, and the largest training batch that
fits with nothing frozen (phase 3, the most memory-hungry phase).

    python benchmarks/memory.py                                   # EfficientNet-B4 + BiLSTM, 224 px
    python benchmarks/memory.py --eval-batches 128,256 --json memory.json
    python benchmarks/memory.py --tiny --device cpu               # a quick functional check on CPU

The largest batch is found by doubling from --start-batch until a step runs out of memory, then bisecting
between the last size that fit and the first that did not (steps of --granularity images). On a CPU nothing
runs out of memory: the search stops at --max-batch. Results go to BENCHMARKS.md with the command.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.throughput import Bench, timed  # noqa: E402
from deepart.core.config import compose_config  # noqa: E402
from deepart.training.freezing import apply_freezing  # noqa: E402

TINY_SEQUENCER = ["sequencer.encoder.hidden_size=16", "sequencer.pooling.hidden_dim=16"]


def fits(bench: Bench, batch: int, size: int) -> tuple[bool, float | None]:
    """Whether two training steps at `batch` run, and their peak device memory (GiB)."""
    device = bench.rt.device
    try:
        images, labels = bench.random_batch(batch, size)
        result = timed(lambda n: [bench.train(images, labels) for _ in range(n)], 1, 1, batch, device)
        return True, result["peak_mem_gib"]
    except torch.OutOfMemoryError:
        return False, None
    finally:
        bench.optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def try_batch(bench: Bench, batch: int, size: int) -> tuple[bool, float | None]:
    ok, mem = fits(bench, batch, size)
    outcome = "out of memory" if not ok else "fits" + ("" if mem is None else f", peak {mem:.2f} GiB")
    print(f"  train batch {batch:5d}: {outcome}", flush=True)
    return ok, mem


def largest_batch(bench: Bench, size: int, start: int, limit: int, granularity: int) -> dict:
    """The largest training batch (a multiple of `granularity`, at most `limit`) whose step fits in memory."""
    good, peak, bad = 0, None, None
    batch = start
    while batch <= limit:
        ok, mem = try_batch(bench, batch, size)
        if not ok:
            bad = batch
            break
        good, peak = batch, mem
        batch *= 2
    while bad is not None and bad - good > granularity:
        mid = (good + bad) // 2 // granularity * granularity
        ok, mem = try_batch(bench, mid, size)
        good, peak, bad = (mid, mem, bad) if ok else (good, peak, mid)
    return {"largest_batch": good, "peak_mem_gib": peak, "first_too_large": bad, "limit": limit}


def measure(args: argparse.Namespace) -> dict:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    overrides = [f"backbone={args.backbone}", *([f"backbone.name={args.backbone_name}"] if args.backbone_name else []),
                 f"sequencer={args.sequencer}", "backbone.pretrained=false", "logger=none", *args.override]
    cfg = compose_config(overrides)
    bench = Bench(cfg, device, fast=True)
    apply_freezing(bench.model, [], 0)  # phase 3: everything trains
    report = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__, "backbone": cfg.backbone.name, "sequencer": args.sequencer,
              "image_size": args.image_size, "eval": {}}
    print(f"device {device}, backbone {cfg.backbone.name}, sequencer {args.sequencer}, {args.image_size}px", flush=True)
    for batch in (int(b) for b in args.eval_batches.split(",")):
        images = bench.random_batch(batch, args.image_size)[0]
        res = timed(lambda n, x=images: [bench.infer(x) for _ in range(n)], args.steps, args.warmup, batch, device)
        report["eval"][str(batch)] = res
        mem = "" if res["peak_mem_gib"] is None else f", peak {res['peak_mem_gib']:.2f} GiB"
        print(f"  eval batch {batch:5d}: {res['images_per_s']:9.1f} images/s{mem}", flush=True)
        del images
    report["train_phase3"] = largest_batch(bench, args.image_size, args.start_batch, args.max_batch,
                                           args.granularity)
    print(f"  largest phase-3 training batch: {report['train_phase3']['largest_batch']}", flush=True)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="efficientnet_b4", help="option of the backbone config group")
    p.add_argument("--backbone-name", default=None, help="any timm model name instead of --backbone")
    p.add_argument("--sequencer", default="bilstm")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--eval-batches", default="128,256", help="comma-separated evaluation batch sizes")
    p.add_argument("--steps", type=int, default=20, help="timed evaluation steps per batch size")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--start-batch", type=int, default=32, help="first training batch tried")
    p.add_argument("--max-batch", type=int, default=4096, help="the search stops here")
    p.add_argument("--granularity", type=int, default=8, help="the largest batch is a multiple of this")
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    p.add_argument("--tiny", action="store_true", help="a tiny model, 64 px, small batches: a quick CPU check")
    p.add_argument("override", nargs="*", help="extra config overrides")
    args = p.parse_args(argv)
    if args.tiny:
        args.backbone_name, args.image_size, args.eval_batches = "test_efficientnet", 64, "8,16"
        args.steps, args.warmup, args.start_batch, args.max_batch = 2, 1, 4, 16
        args.override = ["model.dim=32", "model.head_hidden=16", *TINY_SEQUENCER, *args.override]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = measure(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
