"""AdamW with parameter groups as timm forms them (no weight decay on biases, norms, loss weights and what the
backbone's `no_weight_decay()` names; layer-wise lr decay per layer of the backbone's `group_matcher`), and a warmup
+ cosine schedule."""
from __future__ import annotations

import logging
import math
from functools import partial

import torch
from omegaconf import DictConfig
from torch import nn

from deepart.core.config import build

log = logging.getLogger(__name__)


def backbone_lr_scales(backbone: nn.Module | None, lr_scale: float = 1.0,
                       layer_decay: float | None = None) -> dict[int, float]:
    """id(parameter) -> lr multiplier for the backbone's parameters: `lr_scale` (optimizer.backbone_lr_scale),
    times, with `layer_decay` (optimizer.layer_decay), layer_decay ** (last layer - its layer), the layers of
    `backbone.layer_of()` (a timm model's `group_matcher`: per block for a ViT; the stem or patch embedding is layer
    0): the last layer trains at lr x lr_scale, each earlier one layer_decay times slower, as timm's
    `param_groups_layer_decay` scales them."""
    if backbone is None or (lr_scale == 1 and layer_decay is None):
        return {}
    if layer_decay is None:
        return {id(p): lr_scale for p in backbone.parameters()}
    layers = backbone.layer_of()
    last = max(layers.values())
    return {id(p): lr_scale * layer_decay ** (last - layers[name]) for name, p in backbone.named_parameters()}


def param_groups(modules: list[nn.Module], weight_decay: float, lr: float,
                 scales: dict[int, float] | None = None, no_decay: set[int] | None = None) -> list[dict]:
    """Trainable parameters split into decayed (weights, ndim >= 2, unless id(parameter) is in `no_decay`) and not
    decayed (the rest), and by lr multiplier (`scales`: id(parameter) -> multiplier, 1 when absent;
    `backbone_lr_scales`): the groups at lr first (param_groups[0]["lr"] is the lr a run reports), then slower
    ones."""
    scales, no_decay = scales or {}, no_decay or set()
    groups: dict[tuple[float, bool], list[torch.Tensor]] = {}
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                groups.setdefault((scales.get(id(p), 1.0), p.ndim >= 2 and id(p) not in no_decay), []).append(p)
    order = sorted(groups, key=lambda key: (key[0] != 1, -key[0], not key[1]))
    return [{"params": groups[key], "weight_decay": weight_decay if key[1] else 0.0, "lr": lr * key[0]}
            for key in order]


def build_optimizer(cfg: DictConfig, modules: list[nn.Module], lr: float, device: torch.device):
    """The optimizer of `cfg` over the trainable parameters of `modules` (the model, the loss with its task
    weights); a model's backbone trains at lr * optimizer.backbone_lr_scale, per layer times
    optimizer.layer_decay ** (layers after it) when that is set, and without weight decay on the parameters its
    `no_weight_decay()` names. Logs the number of groups, of learning rates and of tensors without decay."""
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
    named = dict(backbone.named_parameters()) if backbone is not None else {}
    listed = {id(named[name]) for name in getattr(backbone, "no_weight_decay", set)()}
    groups = param_groups(modules, weight_decay, lr, backbone_lr_scales(backbone, lr_scale, layer_decay), listed)
    undecayed = sum(len(g["params"]) for g in groups if not g["weight_decay"])
    layers = (f", backbone layer_decay {layer_decay} over {backbone.num_layers} layers"
              if backbone is not None and layer_decay is not None else "")
    log.info("optimizer: %d parameter groups, learning rates: %d%s; %d tensors without weight decay (%d named by "
             "the backbone's no_weight_decay)", len(groups), len({g["lr"] for g in groups}), layers, undecayed,
             sum(1 for g in groups if not g["weight_decay"] for p in g["params"] if id(p) in listed))
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
