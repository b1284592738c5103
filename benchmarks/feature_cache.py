"""Seconds per epoch of a phase with a frozen backbone, trained on images and on cached backbone features
(trainer.feature_cache), and the top-1 of the two runs against each other (the same seed, augmentation off in both).

    python benchmarks/feature_cache.py --preset demo             # the synthetic demo (generated into a temp folder)
    python benchmarks/feature_cache.py --preset paintings       # Lite0, ImageNet weights, on data/paintings-dev
    python benchmarks/feature_cache.py --preset paintings --data <dir> --epochs 3 -- trainer.threads=1 sequencer=pool

Three real `train.py` runs: (1) trainer.feature_cache=false; (2) trainer.feature_cache=auto: the cache built in a
new folder, then training on it; (3) the same again, reusing the cache. Seconds per epoch are each run's
epoch_time_s (train + validation), averaged over its epochs; the build is run (2)'s wall time minus run (3)'s.
Augmentation off: data.hflip=false, data.train_crop_scale=[1.0, 1.0] (each preset's images are square and
resize_size = image_size, so a training image is exactly its eval view). The figures depend on the CPU and on what
else runs: the load average is printed before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FROZEN = ["phase.freeze=[backbone]", "data.hflip=false", "data.train_crop_scale=[1.0,1.0]", "logger=none",
          "trainer.progress_bar=false", "trainer.log_every_n_steps=0"]
PRESETS = {
    # demo images are generated at 128 px; evaluated at 128 px (no crop), so the eval view is the whole image
    "demo": ["data=demo", "data.source.n_images=600", "data.image_size=128", "data.resize_size=128",
             "backbone=tf_efficientnet_lite0", "backbone.pretrained=false"],
    # conf/experiment/paintings.yaml: Lite0 with the package's ImageNet weights, 160 px of 224-px square images
    "paintings": ["experiment=paintings"],
}


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def train(args: list[str], run_dir: Path, expect: str | None = None) -> tuple[dict, float]:
    """A train.py run's metrics.json and wall seconds; `expect`: a line its log must hold."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args, f"hydra.run.dir={run_dir}"], cwd=REPO,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"train.py failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    if expect and expect not in proc.stdout + proc.stderr:
        sys.exit(f"train.py did not log {expect!r}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads((run_dir / "metrics.json").read_text()), wall


def per_epoch(metrics: dict) -> float:
    times = [r["epoch_time_s"] for r in metrics["history"]]
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--data", help="data.root (paintings: default data/paintings-dev, built by `python -m deepart "
                                       "paintings`; demo: generated if unset)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("overrides", nargs="*", help="more train.py overrides (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = args.data or str(tmp / "demo" if args.preset == "demo" else REPO / "data" / "paintings-dev")
        common = [*PRESETS[args.preset], *FROZEN, f"phase.epochs={args.epochs}", f"seed={args.seed}",
                  *([f"data.root={root}"] if root else []), f"trainer.feature_cache_dir={tmp / 'features'}",
                  *args.overrides]
        print(f"# {args.preset}: {' '.join(common)}")
        print(f"# before: {load()}")
        if args.preset == "demo":  # generate the demo images before anything is timed
            train([*common, "phase.epochs=1", "trainer.feature_cache=false"], tmp / "warmup")
        images, images_wall = train([*common, "trainer.feature_cache=false"], tmp / "images")
        built, built_wall = train([*common, "trainer.feature_cache=auto"], tmp / "built", "feature cache: building")
        reused, reused_wall = train([*common, "trainer.feature_cache=auto"], tmp / "reused", "feature cache: reusing")
        print(f"# after: {load()}")
    rows = [("images (feature_cache=false)", images, images_wall), ("cache built, then trained", built, built_wall),
            ("cache reused", reused, reused_wall)]
    print(f"\n| run | s / epoch | wall s ({args.epochs} epochs) | final val top-1 | best val top-1 |")
    print("|---|---|---|---|---|")
    for name, metrics, wall in rows:
        print(f"| {name} | {per_epoch(metrics):.2f} | {wall:.1f} | {100 * metrics['final']['val/mean_top1']:.2f} "
              f"| {100 * metrics['best']['val/mean_top1']:.2f} |")
    diffs = [abs(a[k] - b[k]) for a, b in zip(images["history"], reused["history"]) for k in a
             if isinstance(a[k], float) and k != "epoch_time_s" and not k.endswith("per_s")]
    print(f"\nseconds per epoch, images / cached features: {per_epoch(images) / per_epoch(reused):.1f}x; "
          f"one-off build: {built_wall - reused_wall:.1f} s; largest difference of any val / train metric between "
          f"the image and the cached run: {max(diffs):.2e}")


if __name__ == "__main__":
    main()
