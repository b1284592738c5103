"""Error gallery: per task, the most confident mistakes of an evaluation, gathered during the pass."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepart.vis.plots import attention_overlay, save_image_grid


@dataclass
class Mistake:
    confidence: float
    true: int
    predicted: int
    image: torch.Tensor                 # uint8 (3, H, W), on the CPU
    attention: torch.Tensor | None      # (h, w) or None
    index: int                          # row of the evaluated split


class MistakeGallery:
    """`collect(batch, out)` callback for `engine.evaluate`: keeps, per task, the `size` wrong predictions
    with the highest confidence. Only candidates are copied to the CPU (one small sync per batch)."""

    def __init__(self, tasks: dict[str, list[str]], size: int = 16):
        self.tasks, self.size = tasks, size
        self.mistakes: dict[str, list[Mistake]] = {t: [] for t in tasks}

    def __call__(self, batch: dict, out: dict) -> None:
        if self.size <= 0:
            return
        labels = batch["labels"]
        attention = out["attention"]
        for i, task in enumerate(self.tasks):
            conf, pred = out["logits"][task].float().softmax(-1).max(-1)       # (B,), (B,)
            y = labels[:, i].to(pred.device)
            conf = torch.where((y >= 0) & (pred != y), conf, torch.full_like(conf, -1.0))
            kept = self.mistakes[task]
            floor = kept[-1].confidence if len(kept) >= self.size else -1.0
            top_c, top_j = conf.topk(min(self.size, len(conf)))
            for c, j in zip(top_c.tolist(), top_j.tolist()):
                if c < 0 or c <= floor:  # sorted: no further mistake beats the kept ones
                    break
                kept.append(Mistake(c, int(y[j]), int(pred[j]), batch["image"][j].cpu(),
                                    None if attention is None else attention[j].float().cpu(),
                                    int(batch["index"][j])))
            kept.sort(key=lambda m: -m.confidence)
            del kept[self.size:]

    def save(self, out_dir: Path, split: str, paths: list[str] | None = None, ncols: int = 4) -> dict[str, Path]:
        """One grid PNG per task with mistakes: mistakes_<task>.png (image | attention overlay pairs)."""
        written = {}
        for task, items in self.mistakes.items():
            if not items:
                continue
            names = self.tasks[task]
            panels, titles = [], []
            for m in items:
                picture = m.image.permute(1, 2, 0).numpy()
                name = Path(paths[m.index]).name if paths else f"#{m.index}"
                panels.append(picture)
                titles.append(f"{name[:28]}\ntrue: {names[m.true]}\npred: {names[m.predicted]} ({m.confidence:.2f})")
                panels.append(attention_overlay(m.image, m.attention) if m.attention is not None else picture)
                titles.append("attention" if m.attention is not None else "(no attention)")
            written[task] = save_image_grid(
                panels, titles, Path(out_dir) / f"mistakes_{task}.png", ncols=2 * ncols,
                suptitle=f"{task}: the {len(items)} most confident mistakes ({split})")
        return written


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
