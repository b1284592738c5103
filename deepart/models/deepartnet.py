"""DeepArtNet: timm backbone -> 1x1 projection -> grid tokens -> sequencer -> pooling -> one head per task."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from deepart.config import build
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn

from deepart.models.backbone import TimmBackbone


class TaskHead(nn.Sequential):
    """Linear(dim, hidden) -> ReLU -> Dropout -> Linear(hidden, num_classes)."""

    def __init__(self, dim: int, hidden: int, num_classes: int, dropout: float):
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


class DeepArtNet(nn.Module):
    """Multi-task painting classifier.

    forward(images) takes uint8 (B,3,H,W) batches (or floats in [0,1]); normalisation with the
    backbone's mean/std happens inside, on the model's device. Returns
    {"logits": {task: (B, C_task)}, "attention": (B, h, w) or None} where h x w is the token grid
    (7x7 at 224 px).
    """

    def __init__(self, backbone: TimmBackbone, encoder: nn.Module | None, pooling: nn.Module,
                 tasks: dict[str, list[str]], dim: int = 512, head_hidden: int = 256,
                 head_dropout: float = 0.4, config: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Conv2d(backbone.out_channels, dim, kernel_size=1)
        self.sequencer = encoder
        self.attention = pooling
        out_dim = encoder.out_dim if encoder is not None else dim
        self.heads = nn.ModuleDict({t: TaskHead(out_dim, head_hidden, len(c), head_dropout)
                                    for t, c in tasks.items()})
        self.tasks = {t: list(c) for t, c in tasks.items()}
        self.config = config or {}
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1) * 255)
        self.frozen_norms: list[nn.Module] = []

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() if images.dtype == torch.uint8 else images.float() * 255
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        x = self.normalize(images)                         # keeps the input's memory format
        feats = self.proj(self.backbone(x))               # (B, dim, h, w)
        b, d, h, w = feats.shape
        tokens = feats.flatten(2).transpose(1, 2)          # (B, h*w, dim)
        if self.sequencer is not None:
            tokens = self.sequencer(tokens, (h, w))        # (B, h*w, out_dim)
        context, weights = self.attention(tokens)          # (B, out_dim), (B, h*w) | None
        logits = {t: head(context) for t, head in self.heads.items()}
        return {"logits": logits, "attention": None if weights is None else weights.view(b, h, w)}

    def train(self, mode: bool = True) -> "DeepArtNet":
        super().train(mode)
        for module in self.frozen_norms:  # frozen BatchNorm keeps its running statistics
            module.eval()
        return self

    # ------------------------------------------------------------------ checkpoints and inference
    @classmethod
    def load_from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "DeepArtNet":
        """Rebuild the model from a deepart checkpoint (nothing else needed) in eval mode."""
        from deepart.training.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path, map_location=map_location)
        cfg = OmegaConf.create(ckpt["config"])
        model = build_model(cfg, ckpt["tasks"], pretrained=False)
        model.load_state_dict(ckpt["model"])
        return model.to(map_location).eval()

    @torch.no_grad()
    def predict(self, images: Image.Image | list[Image.Image], top_k: int = 5) -> dict | list[dict]:
        """Per task: label, confidence and the top-k (label, probability) pairs; plus the attention map.

        Returns one dict for one image, a list for a list: {task: {"label", "confidence", "top5"},
        "attention": (h, w) numpy array or None}.
        """
        from deepart.data.images import _to_rgb
        from deepart.data.transforms import transform_from_config

        single = isinstance(images, Image.Image)
        batch_in = [images] if single else list(images)
        transform = transform_from_config(self.config.get("data", {"image_size": 224}), train=False)
        batch = torch.stack([transform(_to_rgb(im)) for im in batch_in]).to(self.mean.device)
        was_training = self.training
        self.eval()
        out = self(batch)
        self.train(was_training)
        results = decode_top_k(out["logits"], self.tasks, top_k)
        attn = out["attention"]
        for n, r in enumerate(results):
            r["attention"] = None if attn is None else attn[n].float().cpu().numpy()
        return results[0] if single else results


def decode_top_k(logits: dict[str, torch.Tensor], tasks: dict[str, list[str]], top_k: int = 5) -> list[dict]:
    """Per image, per task: {"label", "confidence", "top5": [(label, probability), ...]} (k capped at C)."""
    results: list[dict] = [{} for _ in range(len(next(iter(logits.values()))))]
    for task, task_logits in logits.items():
        probs = task_logits.detach().float().softmax(-1).cpu()
        top_p, top_i = probs.topk(min(top_k, probs.shape[1]), dim=-1)
        names = tasks[task]
        for r, p_row, i_row in zip(results, top_p.tolist(), top_i.tolist()):
            r[task] = {"label": names[i_row[0]], "confidence": p_row[0],
                       "top5": [(names[i], p) for i, p in zip(i_row, p_row)]}
    return results


def build_model(cfg: DictConfig, tasks: dict[str, list[str]], pretrained: bool | None = None) -> DeepArtNet:
    """DeepArtNet from the composed config (`backbone`, `sequencer`, `model` nodes) and the task classes.

    `pretrained=False` skips any weight download or weights file (used when a checkpoint supplies them).
    """
    backbone_cfg = cfg.backbone
    if pretrained is False:
        backbone_cfg = OmegaConf.merge(backbone_cfg, {"pretrained": False, "weights": None})
    backbone = build(backbone_cfg)
    dim = cfg.model.dim
    encoder = build(cfg.sequencer.encoder, dim=dim) if cfg.sequencer.encoder is not None else None
    pooling = build(cfg.sequencer.pooling, dim=encoder.out_dim if encoder is not None else dim)
    config = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    return DeepArtNet(backbone, encoder, pooling, tasks, dim=dim, head_hidden=cfg.model.head_hidden,
                      head_dropout=cfg.model.head_dropout, config=config)
