"""AdamW without weight decay on biases / norms / loss weights, and a warmup + cosine schedule."""
from __future__ import annotations

import math
from functools import partial

import torch
from omegaconf import DictConfig
from torch import nn

from deepart.core.config import build


def param_groups(modules: list[nn.Module], weight_decay: float, lr: float,
                 scaled: nn.Module | None = None, lr_scale: float = 1.0) -> list[dict]:
    """Trainable parameters split into decayed (weights, ndim >= 2) and not decayed (the rest); with
    lr_scale != 1, the parameters of `scaled` (the backbone) in groups of their own at lr * lr_scale."""
    slow = {id(p) for p in scaled.parameters()} if scaled is not None and lr_scale != 1 else set()
    groups = {(is_slow, decayed): [] for is_slow in (False, True) for decayed in (True, False)}
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                groups[(id(p) in slow, p.ndim >= 2)].append(p)
    return [{"params": params, "weight_decay": weight_decay if decayed else 0.0,
             "lr": lr * (lr_scale if is_slow else 1)} for (is_slow, decayed), params in groups.items() if params]


def build_optimizer(cfg: DictConfig, modules: list[nn.Module], lr: float, device: torch.device):
    """The optimizer of `cfg` over the trainable parameters of `modules` (the model, the loss with its task
    weights); a model's backbone trains at lr * optimizer.backbone_lr_scale."""
    opt_cfg = dict(cfg)
    fused = opt_cfg.pop("fused", None)
    weight_decay = opt_cfg.pop("weight_decay", 0.0)
    lr_scale = opt_cfg.pop("backbone_lr_scale", 1.0)
    kwargs = {}
    if fused is None and device.type == "cuda":
        kwargs["fused"] = True
    elif fused:
        kwargs["fused"] = True
    factory = build(DictConfig(opt_cfg))
    backbone = next((m.backbone for m in modules if isinstance(getattr(m, "backbone", None), nn.Module)), None)
    groups = param_groups(modules, weight_decay, lr, backbone, lr_scale)
    return factory(groups, lr=lr, **kwargs)


def _warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer, cfg: DictConfig, steps_per_epoch: int, epochs: int):
    """Per-step LambdaLR: linear warmup over `warmup_epochs`, then cosine to lr * `min_lr_ratio`."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    fn = partial(_warmup_cosine, warmup=warmup, total=total, min_ratio=cfg.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
