"""CPU inference speed: eager PyTorch fp32 vs the faster PyTorch settings vs onnxruntime, side by side.

Measures, in one run and on the same preprocessed images (uint8 batches of the eval transform), images/s of
    eager fp32                 model.eval() under torch.no_grad(), default threads: what a first script does
    eager fp32 1 thread        the same on one intra-op thread
    channels_last              + torch.inference_mode(), channels_last weights and inputs
    channels_last 1 thread     the same on one intra-op thread (on a busy machine more threads can be slower)
    channels_last bf16         + bf16 autocast (only where the CPU has native bf16: avx512_bf16 or AMX)
    compile                    torch.compile of the channels_last model (fp32; compile time not counted)
    compile bf16               the same under bf16 autocast
    onnxruntime                the model exported to ONNX (deepart.inference.onnxrt), onnxruntime's CPU provider
    onnxruntime 1 thread       the same with one intra-op thread
for the reference model (EfficientNet-B4 + BiLSTM at its eval size, 224 px) and Lite0 (tf_efficientnet_lite0 +
BiLSTM, experiment=paintings, 160 px), random weights, batch 1 and 32, and prints the ratios to eager fp32.
Then, for a trained model (`--model`: a checkpoint, run dir or export folder, e.g. a demo run), the top-1
agreement of every path with eager fp32 on that run's val images (demo: the built-in val split).

    python benchmarks/inference.py --model outputs/<demo run>/checkpoints/best.pt
    python benchmarks/inference.py --models lite0 --batches 32 --skip compile     # quicker
    python benchmarks/inference.py ... --before-timing "<cmd>" --after-timing "<cmd>"  # e.g. pause other jobs

Building, exporting and compiling happen first; `--before-timing` runs just before the timed part and
`--after-timing` right after it (also when it fails); the top-1 agreement (not timed) comes last. The figures
are recorded in BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deepart.core.config import compose_config  # noqa: E402
from deepart.data.dataset import SkipCounter  # noqa: E402
from deepart.inference.loading import Predictor, load_model  # noqa: E402
from deepart.models import DeepArtNet, build_model  # noqa: E402

#: the WikiArt tasks and their class counts
TASKS = {t: [f"{t}_{i}" for i in range(k)] for t, k in {"style": 27, "genre": 10, "artist": 23}.items()}
MODELS = {"reference": [], "lite0": ["experiment=paintings"]}
PATHS = ("eager fp32", "eager fp32 1 thread", "channels_last", "channels_last 1 thread", "channels_last bf16",
         "compile", "compile bf16", "onnxruntime", "onnxruntime 1 thread")


def cpu_has_bf16() -> bool:
    """Native bf16 matmul / convolution on this CPU (AVX512-BF16 or AMX), as Linux reports it."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def reference_model(name: str) -> DeepArtNet:
    cfg = compose_config(MODELS[name])
    torch.manual_seed(0)
    return build_model(cfg, TASKS, pretrained=False).eval()


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """PyTorch's intra-op thread count set to `threads` (None: left as it is) for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def runners(model: DeepArtNet, skip: set[str], onnx_dir: Path) -> dict[str, Callable[[torch.Tensor], dict]]:
    """Path name -> callable(uint8 batch) -> the model's output dict."""
    out: dict[str, Callable] = {}

    def eager(threads: int | None = None):
        def run(x):
            with torch_threads(threads), torch.no_grad():
                return model(x)
        return run

    out["eager fp32"] = eager()
    out["eager fp32 1 thread"] = eager(1)
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()

    def fast(m, bf16: bool, threads: int | None = None):
        def run(x):
            with torch_threads(threads), torch.inference_mode(), \
                    torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                o = m(x.contiguous(memory_format=torch.channels_last))
            return {"logits": {t: z.float() for t, z in o["logits"].items()}, "attention": o["attention"]}
        return run

    bf16 = cpu_has_bf16()
    out["channels_last"] = fast(cl, False)
    out["channels_last 1 thread"] = fast(cl, False, threads=1)
    if bf16:
        out["channels_last bf16"] = fast(cl, True)
    if "compile" not in skip:
        compiled = torch.compile(cl, dynamic=False)
        out["compile"] = fast(compiled, False)
        if bf16:
            out["compile bf16"] = fast(torch.compile(copy.deepcopy(cl), dynamic=False), True)
    if "onnxruntime" not in skip:
        from deepart.inference.onnxrt import OnnxModel, export_onnx

        path = onnx_dir / f"{id(model)}.onnx"
        exporter = export_onnx(model, path)
        print(f"  onnx: {exporter} exporter", flush=True)
        out["onnxruntime"] = OnnxModel(path, model.tasks, model.input_cfg, threads=torch.get_num_threads())
        out["onnxruntime 1 thread"] = OnnxModel(path, model.tasks, model.input_cfg, threads=1)
    return {k: v for k, v in out.items() if k not in skip}


def images_per_s(run: Callable, batch: torch.Tensor, min_iters: int, min_seconds: float, warm: bool = True) -> float:
    """Throughput (after one warm-up call unless `warm=False`): at least `min_iters` calls and `min_seconds`
    seconds."""
    if warm:
        run(batch)
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < min_seconds:
        run(batch)
        n += 1
    return n * len(batch) / (time.perf_counter() - start)


def real_batch(model: DeepArtNet, files: list[Path], size: int) -> torch.Tensor:
    """`size` images through the model's eval transform (files reused in turn when there are fewer)."""
    predictor = Predictor(model)
    from PIL import Image

    pictures = [Image.open(files[i % len(files)]).convert("RGB") for i in range(size)]
    return predictor.preprocess(pictures)


def agreement(model: DeepArtNet, paths: list[str], skip: set[str], onnx_dir: Path, batch: int = 32) -> pd.DataFrame:
    """Top-1 agreement (all tasks, image by image) and max |logit difference| of every path vs eager fp32."""
    run = runners(model, skip, onnx_dir)
    predictor = Predictor(model)
    logits: dict[str, dict[str, list[torch.Tensor]]] = {name: {t: [] for t in model.tasks} for name in run}
    for b, _ in predictor.batches(paths, batch, 2, SkipCounter()):
        for name, fn in run.items():
            out = fn(b["image"])
            for t in model.tasks:
                logits[name][t].append(out["logits"][t].float())
    ref = {t: torch.cat(v) for t, v in logits["eager fp32"].items()}
    rows = []
    for name in run:
        got = {t: torch.cat(v) for t, v in logits[name].items()}
        same = [(got[t].argmax(-1) == ref[t].argmax(-1)).float().mean().item() for t in model.tasks]
        rows.append({"path": name, "images": len(ref[next(iter(ref))]),
                     **{f"top1 agree {t} %": 100 * s for t, s in zip(model.tasks, same)},
                     "max |logit diff|": max(float((got[t] - ref[t]).abs().max()) for t in model.tasks)})
    return pd.DataFrame(rows)


def val_paths(ckpt) -> list[str]:
    from omegaconf import OmegaConf

    from deepart.data.loaders import load_table

    table = load_table(OmegaConf.create(ckpt.config).data)
    return [str(table.resolve(p)) for p in table.frame("val")["path"]]


def shell(cmd: str | None) -> None:
    if cmd:
        subprocess.run(cmd, shell=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="trained model for the top-1 agreement (checkpoint, run dir or export "
                                        "folder whose checkpoint's data is at hand); none: skip that part")
    parser.add_argument("--models", default="reference,lite0", help="comma list of: reference, lite0")
    parser.add_argument("--batches", default="1,32", help="comma list of batch sizes")
    parser.add_argument("--images", default=str(Path(__file__).resolve().parents[1] / "data" / "paintings-dev" / "val"),
                        help="folder of JPEGs to time on (default data/paintings-dev/val, the paintings set's val "
                             "images: python -m deepart paintings; random pixels if absent)")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="timed seconds per row, at least")
    parser.add_argument("--min-iters", type=int, default=3, help="timed calls per row, at least")
    parser.add_argument("--skip", default="", help=f"comma list of paths to leave out: {', '.join(PATHS[1:])}; "
                                                   f"`<path>@<model>` leaves it out for that model only")
    parser.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads (default: torch's)")
    parser.add_argument("--before-timing", help="shell command run just before the timed part")
    parser.add_argument("--after-timing", help="shell command run right after the timed part (also on failure)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    batches = [int(b) for b in args.batches.split(",")]
    files = sorted(Path(args.images).rglob("*.jpg")) if Path(args.images).is_dir() else []

    import onnxruntime

    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch threads": torch.get_num_threads(),
               "bf16": cpu_has_bf16(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "images": args.images if files else "random pixels"}
    print("machine:", json.dumps(machine), flush=True)
    onnx_dir = Path(tempfile.mkdtemp(prefix="deepart-bench-"))

    print("preparing (build, export, compile, warm-up) ...", flush=True)
    prepared = []
    for name in args.models.split(","):
        model = reference_model(name)
        run = runners(model, {p for p in skip if "@" not in p} | {p.split("@")[0] for p in skip
                                                                    if p.endswith(f"@{name}")}, onnx_dir)
        size = model.input_cfg["image_size"]
        for b in batches:
            x = real_batch(model, files, b) if files else torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8)
            for fn in run.values():
                fn(x)  # compiles for this shape
            prepared.append((name, size, b, x, run))
    trained = None
    if args.model:
        trained_model, ckpt = load_model(args.model)
        trained = (trained_model, val_paths(ckpt) if ckpt is not None else [])

    rows, agree = [], None
    load_before = os.getloadavg()
    shell(args.before_timing)
    try:
        load_paused = os.getloadavg()
        start = time.time()
        for name, size, b, x, run in prepared:
            eager = None
            for path, fn in run.items():
                ips = images_per_s(fn, x, args.min_iters if b > 1 else 5 * args.min_iters, args.min_seconds, warm=False)
                eager = ips if path == "eager fp32" else eager
                rows.append({"model": name, "px": size, "batch": b, "path": path, "images/s": ips,
                             "x eager": ips / eager})
                print(f"  {name:9s} {size} px  batch {b:3d}  {path:20s} {ips:8.1f} images/s  x{ips / eager:.2f}",
                      flush=True)
        timed_s = time.time() - start
        load_after = os.getloadavg()
    finally:
        shell(args.after_timing)
    if trained is not None and trained[1]:
        print("top-1 agreement on the trained model's val images ...", flush=True)
        agree = agreement(trained[0], trained[1], {p for p in skip if "@" not in p}, onnx_dir)

    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        if agree is not None:
            print(f"\ntop-1 agreement with eager fp32 on {args.model}'s val images:\n"
                  + agree.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    best = table[table.batch == max(batches)].sort_values("x eager").groupby("model").tail(1)
    for _, r in best.iterrows():
        print(f"best at batch {r.batch}: {r.model} {r.path} x{r['x eager']:.2f} eager fp32")
    loads = {"1-min load before": load_before[0], "at start of timing": load_paused[0], "after": load_after[0]}
    print(f"timed part: {timed_s:.0f} s; load average {json.dumps(loads)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows, "load": loads,
                                               "agreement": None if agree is None else agree.to_dict("records")},
                                              indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
