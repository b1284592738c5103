"""Inference CLI: top-k predictions per task for one image, a folder or a glob, from a checkpoint, a run dir
or an export folder alone.

    python -m deepart predict ckpt=outputs/.../checkpoints/best.pt images=paintings/ visualize=true
    python -m deepart predict ckpt=exported-model/ images=scans/ backend=onnx batch_size=64
    python -m deepart predict ckpt=<run dir> images=paintings/ min_confidence=0.6   # below 60 %: "uncertain"
    python -m deepart predict ckpt=<sweep dir> images=paintings/    # the ensemble of the sweep's runs

Options are `key=value` pairs composed onto conf/predict.yaml (which lists them). Unreadable files are
reported and skipped.
"""
from __future__ import annotations

import csv
import glob
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from deepart.core.cli import compose_cli
from deepart.core.errors import ConfigError, DataError, report_errors, require, require_choice
from deepart.core.rundir import run_dir_of
from deepart.core.runtime import check_threads, resolve_device
from deepart.data.dataset import SkipCounter
from deepart.inference.ensemble import ensemble_home, load_ensemble, member_paths
from deepart.inference.loading import BACKENDS, Predictor
from deepart.models import DeepArtNet
from deepart.objectives.calibration import Calibration, min_confidence_per_task
from deepart.vis.plots import overlay, save_image_grid, upsample_map
from deepart.vis.saliency import grad_cam, gradient_image, guided_backprop

log = logging.getLogger("deepart")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
FORMATS = ("json", "csv", "both")


USAGE = "python -m deepart predict ckpt=<run>/checkpoints/best.pt (or a run dir, an export folder, or a sweep dir " \
        "for an ensemble) images=<file, folder or glob>"


def parse_args(argv: list[str]) -> DictConfig:
    """conf/predict.yaml composed with `key=value` arguments; unknown keys and missing values are refused."""
    cfg = compose_cli("predict", argv, required=("ckpt", "images"), usage=USAGE, paths=("ckpt", "images", "out_dir"))
    for key in ("top_k", "batch_size"):
        require(isinstance(cfg[key], int) and cfg[key] >= 1, key, cfg[key], "an integer >= 1")
    require_choice("format", cfg.format, FORMATS)
    require_choice("backend", cfg.backend, BACKENDS)
    check_threads("threads", cfg.threads)
    min_confidence_per_task(cfg.min_confidence)  # the tasks are checked once the model is loaded
    return cfg


def find_images(spec: str) -> list[Path]:
    """A file, every image file below a folder, or the files a glob matches (sorted)."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if len(images) < len(files):
            log.info("%s: ignoring %d files without an image suffix", spec, len(files) - len(images))
    else:
        images = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not images:
        raise DataError(f"images={spec}: no image files found (give an image file, a folder or a glob such "
                        f"as 'paintings/*.jpg')")
    return images


def predict(cfg: DictConfig) -> dict:
    """Run the CLI's work; returns {"predictions": [...], "skipped": [...], "out_dir": ...}."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    members = member_paths(cfg.ckpt)
    if len(members) == 1:
        predictor = Predictor.from_checkpoint(cfg.ckpt, device=cfg.device, backend=cfg.backend, threads=cfg.threads)
        home = run_dir_of(cfg.ckpt)
    else:  # an ensemble: the mean of the members' probabilities
        if cfg.backend != "torch" or cfg.visualize:
            raise ConfigError(f"ckpt={cfg.ckpt} names {len(members)} models (an ensemble), which predict with "
                              f"backend=torch and visualize=false; pass one model for "
                              f"{'backend=' + cfg.backend if cfg.backend != 'torch' else 'visualize=true'}")
        ensemble = load_ensemble(members)[0]
        predictor = Predictor(ensemble, resolve_device(cfg.device, key="device"))
        home = ensemble_home(members)
        log.info("ensemble of %d models: %s", len(members), ", ".join(ensemble.names))
    thresholds = min_confidence_per_task(cfg.min_confidence, predictor.tasks)
    paths = find_images(str(cfg.images))
    out_dir = Path(cfg.out_dir) if cfg.out_dir else home / "predict"
    out_dir.mkdir(parents=True, exist_ok=True)
    skips = SkipCounter(max_warnings=None, keep_files=True)
    records = []
    for batch, out in predictor.batches(paths, cfg.batch_size, cfg.num_workers, skips):
        indices = batch["index"].tolist()
        decoded = predictor.decode(out["logits"], cfg.top_k, thresholds)
        for index, result in zip(indices, decoded):
            records.append({"image": str(paths[index]),
                            "predictions": {t: {"label": r["label"], "confidence": r["confidence"],
                                                "uncertain": r["uncertain"],
                                                "top_k": [{"label": n, "probability": p} for n, p in r["top_k"]]}
                                            for t, r in result.items()}})
        if cfg.visualize:
            _visualize(predictor.model, batch["image"], out["attention"], decoded, [paths[i] for i in indices],
                       indices, out_dir / "visualize", cfg.saliency)

    skipped = [{"path": path, "error": error} for path, error in skips.files]
    if not records:
        raise DataError(f"images={cfg.images}: none of the {len(paths)} files could be read")
    _write(records, skipped, cfg, out_dir, predictor)
    print(format_predictions(records, predictor.tasks, cfg.print_limit))
    print(describe_probabilities(predictor.calibration, thresholds) if len(members) == 1 else
          f"probabilities: the mean of the {len(members)} members' probabilities (each calibrated where it was)")
    written = [f"predictions.{ext}" for ext in ("json", "csv") if cfg.format in (ext, "both")]
    print(f"\n{len(records)} images predicted" + (f", {len(skipped)} unreadable skipped" if skipped else "")
          + f"; wrote {out_dir}/{', '.join(written)}" + (" and visualize/*.png" if cfg.visualize else ""))
    return {"predictions": records, "skipped": skipped, "out_dir": str(out_dir)}


def format_predictions(records: list[dict], tasks: dict, limit: int) -> str:
    """Console table: one row per (image, task), columns top-1 .. top-k as 'label (probability)'."""
    rows = []
    for record in records[:limit]:
        for task in tasks:
            row = {"image": Path(record["image"]).name, "task": task}
            for rank, item in enumerate(record["predictions"][task]["top_k"], start=1):
                row[f"top{rank}"] = f"{item['label']} ({item['probability']:.2f})"
            if record["predictions"][task]["uncertain"]:
                row["top1"] = f"uncertain: {row['top1']}"
            rows.append(row)
    table = pd.DataFrame(rows).fillna("")
    table.loc[table["image"].duplicated(), "image"] = ""
    with pd.option_context("display.max_colwidth", 40, "display.width", 200):
        text = table.to_string(index=False)
    if len(records) > limit:
        text += f"\n... {len(records) - limit} more images in the output files"
    return text


def describe_probabilities(calibration: Calibration, thresholds: dict[str, float]) -> str:
    """A line saying whether the probabilities are calibrated, and which answers are marked uncertain."""
    if calibration.calibrated:
        temps = ", ".join(f"{t} {v:.2f}" for t, v in calibration.temperature.items())
        text = f"probabilities calibrated by temperature scaling on the {calibration.split} split (T: {temps})"
    else:
        text = "probabilities: the model's softmax, not calibrated (python eval.py ckpt=<run> calibrate=true fits it)"
    if thresholds:
        text += "; answers below " + ", ".join(f"{v:g} ({t})" for t, v in thresholds.items()) + " marked uncertain"
    return text


def _write(records: list[dict], skipped: list[dict], cfg: DictConfig, out_dir: Path, predictor: Predictor) -> None:
    tasks = predictor.tasks
    if cfg.format in ("json", "both"):
        payload = {"checkpoint": str(cfg.ckpt), "backend": cfg.backend, "images": str(cfg.images), "tasks": list(tasks),
                   "temperature": {t: predictor.calibration.of(t) for t in tasks},
                   "min_confidence": min_confidence_per_task(cfg.min_confidence, tasks),
                   "predictions": records, "skipped": skipped}
        (out_dir / "predictions.json").write_text(json.dumps(payload, indent=2))
    if cfg.format in ("csv", "both"):
        with open(out_dir / "predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image"] + [c for t in tasks for c in (t, f"{t}_confidence", f"{t}_uncertain",
                                                                   f"{t}_top_k")])
            for r in records:
                cells = [r["image"]]
                for t in tasks:
                    p = r["predictions"][t]
                    top = ";".join(f"{i['label']}:{i['probability']:.4f}" for i in p["top_k"])
                    cells += [p["label"], f"{p['confidence']:.4f}", p["uncertain"], top]
                writer.writerow(cells)


def _visualize(model: DeepArtNet, images: torch.Tensor, attention, decoded: list[dict], paths: list[Path],
               indices: list[int], out_dir: Path, saliency: DictConfig) -> None:
    """One PNG per image: painting | attention | Grad-CAM per task (| guided backprop per task)."""
    tasks = list(model.tasks)
    cams = {t: grad_cam(model, images, t, layer=saliency.layer) for t in tasks}           # (B, H, W) each
    guided = {t: guided_backprop(model, images, t) for t in tasks} if saliency.guided else {}
    for j, (path, result) in enumerate(zip(paths, decoded)):
        picture = images[j].permute(1, 2, 0).cpu().numpy()
        panels, titles = [picture], [path.name]
        if attention is not None:
            panels.append(overlay(picture, upsample_map(attention[j].float().cpu(), picture.shape[:2])))
            titles.append("attention")
        for t in tasks:
            panels.append(overlay(picture, cams[t][j]))
            titles.append(f"Grad-CAM {t}\n{result[t]['label']} ({result[t]['confidence']:.2f})")
        ncols = len(panels)
        if guided:
            panels += [np.full_like(picture, 255)] * (ncols - len(tasks))
            titles += [""] * (ncols - len(tasks))
            for t in tasks:
                panels.append(gradient_image(guided[t][j]))
                titles.append(f"guided backprop {t}")
        save_image_grid(panels, titles, out_dir / f"{indices[j]:05d}_{path.stem}.png", ncols=ncols)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    return report_errors(lambda: predict(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
