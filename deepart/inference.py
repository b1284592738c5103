"""From a checkpoint to a ready model, and from images to predictions: the one way eval.py,
`python -m deepart.predict`, the saliency maps and the Python API load and run a trained model.

    from PIL import Image
    from deepart import Predictor

    predictor = Predictor.from_checkpoint("outputs/.../checkpoints/best.pt")   # device="auto"
    result = predictor.predict(Image.open("painting.jpg"))
    result["style"]      # {"label": "Impressionism", "confidence": 0.81, "top_k": [("Impressionism", 0.81), ...]}
    result["attention"]  # (7, 7) numpy array: where the model looked (None for sequencer=pool)

The model brings its own preprocessing (`DeepArtNet.input_cfg`: the eval transform's sizes and the
backbone's mean / std), its class names and nothing else of the run's config.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from deepart.checkpoint import Checkpoint
from deepart.core.runtime import resolve_device
from deepart.data.dataset import ImageDataset, SkipCounter, collate
from deepart.data.images import to_rgb
from deepart.data.transforms import min_decode_side, transform_from_config
from deepart.models import DeepArtNet, build_model


def load_model(path: str | Path) -> tuple[DeepArtNet, Checkpoint]:
    """The checkpoint's model (built from its own config, no weight download), on the CPU in eval mode,
    and the checkpoint it came from."""
    ckpt = Checkpoint.load(path)
    model = build_model(OmegaConf.create(ckpt.config), ckpt.tasks, pretrained=False)
    model.load_state_dict(ckpt.weights)
    return model.eval(), ckpt


def decode_top_k(logits: dict[str, torch.Tensor], tasks: dict[str, list[str]], top_k: int = 5) -> list[dict]:
    """Per image, per task: {"label", "confidence", "top_k": [(label, probability), ...]} (k capped at C)."""
    results: list[dict] = [{} for _ in range(len(next(iter(logits.values()))))]
    for task, task_logits in logits.items():
        probs = task_logits.detach().float().softmax(-1).cpu()
        top_p, top_i = probs.topk(min(top_k, probs.shape[1]), dim=-1)
        names = tasks[task]
        for r, p_row, i_row in zip(results, top_p.tolist(), top_i.tolist()):
            r[task] = {"label": names[i_row[0]], "confidence": p_row[0],
                       "top_k": [(names[i], p) for i, p in zip(i_row, p_row)]}
    return results


class Predictor:
    """A trained DeepArtNet ready for images: eval mode on its device, with its eval transform and classes."""

    def __init__(self, model: DeepArtNet, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.transform = transform_from_config(model.input_cfg, train=False)
        self.min_side = min_decode_side(model.input_cfg)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Predictor:
        """`device`: auto (a GPU when there is one) | cpu | cuda | cuda:N."""
        device = resolve_device(device, key="device")
        return cls(load_model(path)[0], device)

    @property
    def tasks(self) -> dict[str, list[str]]:
        return self.model.tasks

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> the uint8 (B, 3, H, W) batch the model takes (the eval transform), on the device."""
        return torch.stack([self.transform(to_rgb(im)) for im in images]).to(self.device)

    @torch.no_grad()
    def predict(self, images: Image.Image | Sequence[Image.Image], top_k: int = 5) -> dict | list[dict]:
        """Per task: label, confidence and the top-k (label, probability) pairs; plus the attention map.

        Returns one dict for one image, a list for a list: {task: {"label", "confidence", "top_k"},
        "attention": (h, w) numpy array or None}.
        """
        single = isinstance(images, Image.Image)
        out = self.model(self.preprocess([images] if single else list(images)))
        results = decode_top_k(out["logits"], self.tasks, top_k)
        for n, r in enumerate(results):
            r["attention"] = None if out["attention"] is None else out["attention"][n].float().cpu().numpy()
        return results[0] if single else results

    def batches(self, paths: Sequence[str | Path], batch_size: int, num_workers: int,
                skips: SkipCounter) -> Iterator[tuple[dict, dict]]:
        """(batch, outputs) over image files in batches of the eval transform (batch["image"] on the device),
        decoded by `num_workers` processes; unreadable files are skipped and counted in `skips`."""
        dataset = ImageDataset([str(p) for p in paths], None, self.transform, self.min_side)
        workers = min(num_workers, len(dataset) - 1) if len(dataset) > 1 else 0
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
        bar = tqdm(loader, desc="predict", unit="batch", dynamic_ncols=True, disable=len(loader) < 2)
        for batch in skips.readable(bar):
            batch["image"] = batch["image"].to(self.device)
            with torch.no_grad():
                out = self.model(batch["image"])
            yield batch, out
