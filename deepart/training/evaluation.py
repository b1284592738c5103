"""One evaluation pass of a model over a loader (`evaluate_loader`: the validation of training and the work of
eval.py) and the per-image predictions and logits it can record (`PredictionRecorder`, `LogitRecorder`)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from deepart.core import faults
from deepart.core.runtime import Runtime
from deepart.data.dataset import SkipCounter
from deepart.objectives.losses import MultiTaskLoss
from deepart.objectives.metrics import MetricAccumulator

#: test-time augmentation (eval.py tta=): the views of each image whose logits are averaged
TTA_MODES = ("none", "hflip", "five_crop", "five_crop_hflip")


def tta_views(images: torch.Tensor, mode: str, crop: float = 0.875) -> list[torch.Tensor]:
    """The views of a batch of images (B, 3, H, W) that test-time augmentation `mode` averages over, the image
    itself first: hflip adds its mirror image; five_crop its four corner crops and its centre crop, each `crop` of
    the side, resized back to H x W (bilinear); five_crop_hflip those six and their mirror images. uint8 batches
    stay uint8 for the views without resizing; the resized ones are floats in [0, 1] (what DeepArtNet takes)."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta={mode!r}: one of {', '.join(TTA_MODES)}")
    views = [images]
    if mode.startswith("five_crop"):
        h, w = images.shape[-2:]
        ch, cw = max(1, round(h * crop)), max(1, round(w * crop))
        x = images.float() / 255 if images.dtype == torch.uint8 else images
        tops, lefts = (0, 0, h - ch, h - ch, (h - ch) // 2), (0, w - cw, 0, w - cw, (w - cw) // 2)
        for top, left in zip(tops, lefts):
            part = x[..., top:top + ch, left:left + cw]
            views.append(torch.nn.functional.interpolate(part, size=(h, w), mode="bilinear", align_corners=False)
                         .clamp_(0, 1))
    if mode.endswith("hflip"):
        views += [v.flip(-1) for v in views]
    return views


def tta_forward(model, images: torch.Tensor, mode: str = "none", crop: float = 0.875) -> dict:
    """model(images) with its logits averaged over the views of `tta_views` (attention: of the image itself)."""
    out = model(images)
    if mode == "none":
        return out
    others = [model(view)["logits"] for view in tta_views(images, mode, crop)[1:]]
    out["logits"] = {t: (z + sum(o[t] for o in others)) / (1 + len(others)) for t, z in out["logits"].items()}
    return out


@torch.no_grad()
def evaluate_loader(model, loss_fn: MultiTaskLoss, loader, rt: Runtime, tasks: dict, *, skips: SkipCounter,
                    desc: str = "val", progress: bool = False, collect: Callable[[dict, dict], None] | None = None,
                    reduce: Callable[[list[torch.Tensor]], None] | None = None, hflip: bool = False,
                    tta: str | None = None, tta_crop: float = 0.875) -> tuple[dict[str, float], MetricAccumulator]:
    """Metrics of the model on a loader (eval mode, deterministic). `collect(batch, out)` sees every batch;
    `reduce(tensors)` sums the counts over processes when each evaluates a disjoint shard; `tta`: test-time
    augmentation, the logits averaged over the views of `tta_views` (attention of the image itself); `hflip`:
    tta=hflip (the image's and its mirror image's logits)."""
    model.eval()
    mode = tta or ("hflip" if hflip else "none")
    meter = MetricAccumulator(tasks, rt.device)
    bar = tqdm(loader, total=len(loader), desc=desc, disable=not progress, leave=False, dynamic_ncols=True,
               mininterval=1.0)
    for batch in skips.readable(bar):
        images, labels = rt.images(batch), rt.labels(batch)
        with rt.autocast():
            out = tta_forward(model, images, mode, tta_crop)
        sums = torch.stack([loss_fn.per_sample(out["logits"][t], labels[:, i])[0].sum()
                            for i, t in enumerate(loss_fn.task_names)])
        meter.update(out["logits"], labels, sums)
        if collect is not None:
            collect(batch, out)
        faults.point("eval")
    bar.close()
    if reduce is not None:
        reduce(meter.tensors())
    return meter.compute("val"), meter


class PredictionRecorder:
    """`collect(batch, out)` callback of `evaluate_loader`: every image's true and predicted class per task,
    saved as `<split>_predictions.csv` (index, path as listed in the dataset, <task>, <task>_pred; -1 = no
    label). The report's paired tests compare runs image by image with it."""

    def __init__(self, tasks: dict[str, list[str]], paths: list[str]):
        self.tasks, self.paths = list(tasks), paths
        self.parts: list[torch.Tensor] = []

    def __call__(self, batch: dict, out: dict) -> None:
        preds = torch.stack([out["logits"][t].argmax(-1).cpu() for t in self.tasks], 1)   # (B, T)
        self.parts.append(torch.cat([batch["index"][:, None], batch["labels"], preds], 1))

    def frame(self) -> pd.DataFrame:
        rows = torch.cat(self.parts).numpy() if self.parts else np.zeros((0, 1 + 2 * len(self.tasks)), dtype=int)
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        n = len(self.tasks)
        columns = {"index": rows[:, 0], "path": [self.paths[i] for i in rows[:, 0]]}
        for t, task in enumerate(self.tasks):
            columns[task], columns[f"{task}_pred"] = rows[:, 1 + t], rows[:, 1 + n + t]
        return pd.DataFrame(columns)

    def save(self, path: Path) -> Path:
        self.frame().to_csv(path, index=False)
        return path


class LogitRecorder:
    """`collect(batch, out)` callback of `evaluate_loader`: every image's logits per task (float32, on the CPU)
    and labels (-1 = no label), for what needs more than the metrics' counts (calibration, coverage)."""

    def __init__(self, tasks: dict[str, list[str]]):
        self.tasks = list(tasks)
        self.parts: dict[str, list[torch.Tensor]] = {t: [] for t in self.tasks}
        self.label_parts: list[torch.Tensor] = []

    def __call__(self, batch: dict, out: dict) -> None:
        for task in self.tasks:
            self.parts[task].append(out["logits"][task].detach().float().cpu())
        self.label_parts.append(batch["labels"].cpu())

    def logits(self, task: str) -> torch.Tensor:
        return torch.cat(self.parts[task]) if self.parts[task] else torch.zeros(0, 1)

    def labels(self, task: str) -> torch.Tensor:
        labels = torch.cat(self.label_parts) if self.label_parts else torch.zeros(0, len(self.tasks), dtype=torch.long)
        return labels[:, self.tasks.index(task)]
