"""AdamW without weight decay on biases / norms / loss weights, and a warmup + cosine schedule."""
from __future__ import annotations

import math
from functools import partial

import torch
from omegaconf import DictConfig
from torch import nn

from deepart.core.config import build


def backbone_lr_scales(backbone: nn.Module | None, lr_scale: float = 1.0,
                       layer_decay: float | None = None) -> dict[int, float]:
    """id(parameter) -> lr multiplier for the backbone's parameters: `lr_scale` (optimizer.backbone_lr_scale),
    times, with `layer_decay` (optimizer.layer_decay), layer_decay ** (last stage - its stage): the last stage
    trains at lr x lr_scale, each earlier stage (the stem is in stage 0) layer_decay times slower."""
    if backbone is None or (lr_scale == 1 and layer_decay is None):
        return {}
    if layer_decay is None:
        return {id(p): lr_scale for p in backbone.parameters()}
    stages, last = backbone.stage_of(), backbone.num_stages - 1
    return {id(p): lr_scale * layer_decay ** (last - stages.get(name, last)) for name, p in backbone.named_parameters()}


def param_groups(modules: list[nn.Module], weight_decay: float, lr: float,
                 scales: dict[int, float] | None = None) -> list[dict]:
    """Trainable parameters split into decayed (weights, ndim >= 2) and not decayed (the rest), and by lr
    multiplier (`scales`: id(parameter) -> multiplier, 1 when absent; `backbone_lr_scales`): the groups at lr
    first (param_groups[0]["lr"] is the lr a run reports), then slower ones."""
    scales = scales or {}
    groups: dict[tuple[float, bool], list[torch.Tensor]] = {}
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                groups.setdefault((scales.get(id(p), 1.0), p.ndim >= 2), []).append(p)
    order = sorted(groups, key=lambda key: (key[0] != 1, -key[0], not key[1]))
    return [{"params": groups[key], "weight_decay": weight_decay if key[1] else 0.0, "lr": lr * key[0]}
            for key in order]


def build_optimizer(cfg: DictConfig, modules: list[nn.Module], lr: float, device: torch.device):
    """The optimizer of `cfg` over the trainable parameters of `modules` (the model, the loss with its task
    weights); a model's backbone trains at lr * optimizer.backbone_lr_scale, per stage times
    optimizer.layer_decay ** (stages after it) when that is set."""
    opt_cfg = dict(cfg)
    fused = opt_cfg.pop("fused", None)
    weight_decay = opt_cfg.pop("weight_decay", 0.0)
    lr_scale = opt_cfg.pop("backbone_lr_scale", 1.0)
    layer_decay = opt_cfg.pop("layer_decay", None)
    kwargs = {}
    if fused is None and device.type == "cuda":
        kwargs["fused"] = True
    elif fused:
        kwargs["fused"] = True
    factory = build(DictConfig(opt_cfg))
    backbone = next((m.backbone for m in modules if isinstance(getattr(m, "backbone", None), nn.Module)), None)
    groups = param_groups(modules, weight_decay, lr, backbone_lr_scales(backbone, lr_scale, layer_decay))
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
