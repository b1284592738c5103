"""AdamW without weight decay on biases / norms / loss weights, and a warmup + cosine schedule."""
from __future__ import annotations

import math
from functools import partial

import torch
from omegaconf import DictConfig
from torch import nn

from deepart.config import build


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    """Trainable parameters split into decayed (weights, ndim >= 2) and not decayed (the rest)."""
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(cfg: DictConfig, modules: list[nn.Module], lr: float, device: torch.device):
    opt_cfg = dict(cfg)
    fused = opt_cfg.pop("fused", None)
    weight_decay = opt_cfg.pop("weight_decay", 0.0)
    kwargs = {}
    if fused is None and device.type == "cuda":
        kwargs["fused"] = True
    elif fused:
        kwargs["fused"] = True
    factory = build(DictConfig(opt_cfg))
    return factory(param_groups(modules, weight_decay), lr=lr, **kwargs)


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
