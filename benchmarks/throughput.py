"""Training and evaluation throughput: model-only ceiling vs. end-to-end pipelines, side by side.

Measures, in one run and on the same model, batch and JPEG files:
    train  model-only      uint8 batches already on the device -> optimizer step (the ceiling)
    train  model-only fp32 the same with fp32, no channels_last, non-fused AdamW (the naive model)
    train  e2e originals   the project's loader on the original JPEGs -> optimizer step
    train  e2e cache       the project's loader on the resized cache (the default fast path)
    train  naive           fp32 model + Pillow on the originals, float tensors made in the workers,
                           a plain DataLoader (no pinned memory, no persistent workers, default prefetch)
    eval   model-only      inference on batches already on the device
    eval   e2e cache / e2e originals   the project's eval loader -> inference
and prints images/s, peak GPU memory and the ratios as a table and as JSON.

    python benchmarks/throughput.py                         # reference model, 512 JPEGs of 1600x1200
    python benchmarks/throughput.py --images <dir>          # your own JPEGs instead
    python benchmarks/throughput.py --tiny --device cpu     # a quick CPU check (tiny model, few steps)

The figures measured on GPUs are recorded in BENCHMARKS.md with the command that produced them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cache_speed import make_images  # noqa: E402
from deepart.core.config import build, compose_config  # noqa: E402
from deepart.core.runtime import Runtime  # noqa: E402
from deepart.data.cache import prepare_cache, use_cache  # noqa: E402
from deepart.data.dataset import collate  # noqa: E402
from deepart.data.loaders import eval_loader, train_loader  # noqa: E402
from deepart.data.table import TaskTable  # noqa: E402
from deepart.models import build_model  # noqa: E402
from deepart.training.engine import train_step  # noqa: E402
from deepart.training.optim import build_optimizer  # noqa: E402

#: the WikiArt tasks and their class counts
TASKS = {"style": 27, "genre": 10, "artist": 23}


# ---------------------------------------------------------------------------------------------- data

def table_of(paths: list[Path], root: Path, seed: int = 0) -> TaskTable:
    """Every image in both splits with random labels for the three WikiArt tasks."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"path": [str(p.relative_to(root)) for p in paths]})
    for task, k in TASKS.items():
        frame[task] = rng.integers(0, k, len(frame))
    names = {task: [f"{task}_{i}" for i in range(k)] for task, k in TASKS.items()}
    return TaskTable(train=frame, val=frame.copy(), tasks=names, image_root=root)


class NaiveDataset(torch.utils.data.Dataset):
    """What a first training script does: Pillow decode of the original, float tensors in the worker."""

    def __init__(self, table: TaskTable, image_size: int):
        self.paths = [str(table.resolve(p)) for p in table.train["path"]]
        self.labels = torch.from_numpy(table.labels("train"))
        self.transform = v2.Compose([v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip(),
                                     v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        img = Image.open(self.paths[i]).convert("RGB")
        return {"image": self.transform(img), "labels": self.labels[i], "index": i}


def cycle(loader: DataLoader) -> Iterator[dict]:
    while True:
        yield from loader


# ---------------------------------------------------------------------------------------------- timing

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run_steps: Callable[[int], None], steps: int, warmup: int, batch: int, device: torch.device) -> dict:
    """images/s of `run_steps(n)` over `steps` steps after `warmup` steps, and the peak device memory."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    run_steps(warmup)
    _sync(device)
    start = time.perf_counter()
    run_steps(steps)
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"images_per_s": batch * steps / seconds, "seconds": seconds, "steps": steps, "batch": batch,
            "peak_mem_gib": peak}


class Bench:
    """One model + loss + optimizer in one precision setting, and its train / eval steps."""

    def __init__(self, cfg, device: torch.device, fast: bool):
        self.cfg = cfg
        self.rt = Runtime(device, bf16=fast and device.type == "cuda", channels_last=fast and device.type == "cuda")
        tasks = {t: [str(i) for i in range(k)] for t, k in TASKS.items()}
        torch.manual_seed(0)
        self.model = self.rt.prepare(build_model(cfg, tasks))
        self.loss_fn = build(cfg.loss, tasks=tasks).to(device)
        opt_cfg = cfg.optimizer if fast else {**cfg.optimizer, "fused": False}
        self.optimizer = build_optimizer(opt_cfg, [self.model, self.loss_fn], 1e-4, device)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.grad_clip = cfg.trainer.grad_clip
        self.forward = torch.compile(self.model) if cfg.trainer.compile else self.model

    def train(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        train_step(self.forward, self.loss_fn, images, labels, self.optimizer, self.rt, grad_clip=self.grad_clip,
                   params=self.params)

    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> None:
        with self.rt.autocast():
            self.forward(images)

    def batch_on_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rt.images(batch), self.rt.labels(batch)

    def random_batch(self, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, device=self.rt.device)
        if self.rt.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.stack([torch.randint(0, k, (n,), device=self.rt.device) for k in TASKS.values()], 1)
        return images, labels


class Setup:
    """What every measurement shares: the config, device, image tables (originals and cache), sizes, and the
    results so far."""

    def __init__(self, args: argparse.Namespace, cfg: Any, device: torch.device, paths: list[Path], table: TaskTable,
                 cached: TaskTable, sampler_cfg: Any):
        self.args, self.cfg, self.device, self.paths = args, cfg, device, paths
        self.table, self.cached, self.sampler_cfg = table, cached, sampler_cfg
        self.results: dict[str, dict] = {}

    @property
    def bs(self) -> int:
        return self.args.batch_size

    @property
    def ebs(self) -> int:
        return self.args.eval_batch_size or 2 * self.args.batch_size

    def record(self, name: str, run_steps: Callable[[int], None], batch: int) -> None:
        """Time `run_steps` (args.steps after args.warmup), keep and print the result."""
        res = self.results[name] = timed(run_steps, self.args.steps, self.args.warmup, batch, self.device)
        mem = "" if res["peak_mem_gib"] is None else f", peak {res['peak_mem_gib']:.2f} GiB"
        print(f"  {name:28s} {res['images_per_s']:9.1f} images/s{mem}", flush=True)


def from_loader(bench: Bench, loader: DataLoader, train: bool) -> Callable[[int], None]:
    """`run(n)`: n train (or inference) steps on the loader's next batches."""
    it = cycle(loader)

    def run(n: int) -> None:
        for _ in range(n):
            images, labels = bench.batch_on_device(next(it))
            bench.train(images, labels) if train else bench.infer(images)
    return run


def pick_device(name: str) -> torch.device:
    device = torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                          ("cpu" if name == "auto" else name))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def bench_config(args: argparse.Namespace, work: Path):
    """The project config of the measured model (no pretrained weights, the cache under `work`)."""
    return compose_config([
        f"backbone={args.backbone}", *([f"backbone.name={args.backbone_name}"] if args.backbone_name else []),
        f"sequencer={args.sequencer}", f"data.image_size={args.image_size}", f"data.num_workers={args.workers}",
        f"trainer.compile={str(args.compile).lower()}", "backbone.pretrained=false", "logger=none",
        f"data.cache_dir={work / 'cache'}", "data.cache=require", *args.override])


def bench_images(args: argparse.Namespace, work: Path) -> tuple[Path, list[Path]]:
    """(root, JPEG paths): those of --images, else synthetic JPEGs of --source-size written under `work`."""
    if args.images:
        root = Path(args.images)
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg"})[: args.n_images]
        if not paths:
            raise SystemExit(f"no .jpg files under {root}")
        return root, paths
    root = work / "originals"
    width, height = (int(v) for v in args.source_size.lower().split("x"))
    print(f"writing {args.n_images} JPEGs of {width}x{height} to {root} ...", flush=True)
    make_images(root, args.n_images, (width, height))
    return root, sorted(root.rglob("*.jpg"))


def prepare(args: argparse.Namespace) -> Setup:
    device = pick_device(args.device)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="deepart-bench-"))
    cfg = bench_config(args, work)
    root, paths = bench_images(args, work)
    table = table_of(paths, root)
    prepare_cache(table, cfg.data, workers=args.workers)
    # sampler=random: the same draws for both loaders; the weighted sampler costs nothing extra per image
    sampler_cfg = compose_config(["sampler=random"]).sampler
    return Setup(args, cfg, device, paths, table, use_cache(table, cfg.data), sampler_cfg)


def fast_path(s: Setup) -> None:
    """The default path: bf16 / channels_last on CUDA, the project's loaders (models freed on return)."""
    fast, size = Bench(s.cfg, s.device, fast=True), s.args.image_size
    images, labels = fast.random_batch(s.bs, size)
    s.record("train model-only", lambda n: [fast.train(images, labels) for _ in range(n)], s.bs)
    for name, tbl in (("train e2e originals", s.table), ("train e2e cache", s.cached)):
        loader = train_loader(tbl, s.cfg.data, s.sampler_cfg, s.bs, seed=0, device=str(s.device))
        s.record(name, from_loader(fast, loader, True), s.bs)
        del loader
    eval_images = fast.random_batch(s.ebs, size)[0]
    s.record("eval model-only", lambda n: [fast.infer(eval_images) for _ in range(n)], s.ebs)
    for name, tbl in (("eval e2e originals", s.table), ("eval e2e cache", s.cached)):
        loader = eval_loader(tbl, s.cfg.data, s.ebs, str(s.device), workers=s.args.workers)
        s.record(name, from_loader(fast, loader, False), s.ebs)
        del loader


def naive_path(s: Setup) -> None:
    """fp32, a plain Pillow decode + torchvision transform per image, a plain DataLoader."""
    naive = Bench(s.cfg, s.device, fast=False)
    images, labels = naive.random_batch(s.bs, s.args.image_size)
    s.record("train model-only fp32", lambda n: [naive.train(images, labels) for _ in range(n)], s.bs)
    loader = DataLoader(NaiveDataset(s.table, s.args.image_size), batch_size=s.bs, shuffle=True,
                        num_workers=s.args.workers, collate_fn=collate, drop_last=True)
    s.record("train naive", from_loader(naive, loader, True), s.bs)


def ratios(results: dict[str, dict]) -> dict[str, float]:
    def ratio(a: str, b: str) -> float:
        return results[a]["images_per_s"] / results[b]["images_per_s"]

    return {
        "e2e cache / model-only": ratio("train e2e cache", "train model-only"),
        "e2e originals / model-only": ratio("train e2e originals", "train model-only"),
        "e2e cache / naive": ratio("train e2e cache", "train naive"),
        "eval e2e cache / eval model-only": ratio("eval e2e cache", "eval model-only"),
    }


def measure(args: argparse.Namespace) -> dict:
    """Every configuration of the module docstring on one model, batch and set of JPEGs; the report as a dict."""
    s = prepare(args)
    print(f"device {s.device}, backbone {s.cfg.backbone.name}, sequencer {args.sequencer}, {args.image_size}px, "
          f"batch {s.bs}, {len(s.paths)} images, {args.workers} workers", flush=True)
    fast_path(s)
    naive_path(s)
    gpu = torch.cuda.get_device_name(s.device) if s.device.type == "cuda" else None
    return {"device": str(s.device), "gpu": gpu, "torch": torch.__version__, "backbone": s.cfg.backbone.name,
            "sequencer": args.sequencer, "image_size": args.image_size, "batch_size": s.bs,
            "eval_batch_size": s.ebs, "n_images": len(s.paths), "source": args.images or args.source_size,
            "workers": args.workers, "compile": args.compile, "steps": args.steps, "warmup": args.warmup,
            "results": s.results, "ratios": ratios(s.results)}


def print_table(report: dict) -> None:
    print()
    print(f"{'configuration':30s} {'images/s':>10s} {'peak GiB':>9s}")
    print("-" * 51)
    for name, res in report["results"].items():
        mem = "-" if res["peak_mem_gib"] is None else f"{res['peak_mem_gib']:.2f}"
        print(f"{name:30s} {res['images_per_s']:10.1f} {mem:>9s}")
    print()
    for name, value in report["ratios"].items():
        print(f"{name:34s} {value:6.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backbone", default="efficientnet_b4", help="option of the backbone config group")
    p.add_argument("--backbone-name", default=None, help="any timm model name instead of --backbone")
    p.add_argument("--sequencer", default="bilstm", help="option of the sequencer config group")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-batch-size", type=int, default=None, help="default: 2x --batch-size")
    p.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=8, help="untimed steps before each measurement")
    p.add_argument("--images", default=None, help="folder of JPEGs to use instead of synthetic ones")
    p.add_argument("--n-images", type=int, default=512, help="how many JPEGs to make (or use from --images)")
    p.add_argument("--source-size", default="1600x1200", help="WIDTHxHEIGHT of the synthetic JPEGs")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers")
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--work-dir", default=None, help="where the JPEGs and the cache go (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    p.add_argument("--tiny", action="store_true",
                   help="a quick check: test_efficientnet, 64 px, batch 8, few steps, small JPEGs")
    p.add_argument("override", nargs="*", help="extra config overrides, e.g. loss=ce")
    args = p.parse_args(argv)
    if args.tiny:
        args.backbone_name = args.backbone_name or "test_efficientnet"
        args.image_size, args.batch_size, args.steps, args.warmup = 64, 8, 3, 1
        args.n_images, args.source_size, args.workers = min(args.n_images, 32), "320x240", min(args.workers, 2)
        args.override = ["sequencer.encoder.hidden_size=16", "sequencer.pooling.hidden_dim=16", "model.dim=32",
                         "model.head_hidden=16", *args.override]
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    report = measure(args)
    print_table(report)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
