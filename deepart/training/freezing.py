"""Phase freezing: which parameters train, expressed as data (`phase.freeze`, `phase.freeze_stages`)."""
from __future__ import annotations

import logging

from torch import nn

from deepart.models.backbone import Backbone
from deepart.models.deepartnet import DeepArtNet

log = logging.getLogger(__name__)


def log_stages(backbone: Backbone, image_size: int) -> None:
    """The start-up line that shows what `phase.freeze_stages` and `optimizer.layer_decay` act on, and the token
    grid the backbone gives at `image_size` (its forward run on the meta device)."""
    h, w = backbone.grid(image_size)
    stages = " | ".join(f"{k}: {span} {n / 1e6:.2f}M" for k, (span, n) in enumerate(backbone.stage_summary()))
    padded = (f" (padded to whole {backbone.pad_multiple}-px patches)"
              if image_size % backbone.pad_multiple else "")
    log.info("backbone %s: %d stages (%s), %d layers for optimizer.layer_decay; %dx%d tokens at %d px%s",
             backbone.name, backbone.num_stages, stages, backbone.num_layers, h, w, image_size, padded)


def log_texture(model: DeepArtNet) -> None:
    """The start-up line of the `texture` statistics: which stages, how many features, and what the heads read."""
    if model.texture is None:
        return
    heads_in = next(iter(model.heads.values()))[0].in_features
    log.info("texture: %s; the heads read %d features (%s)", model.texture.describe(), heads_in,
             "the texture alone: sequencer=none" if model.pooling is None else
             f"{heads_in - model.texture.out_dim} of the sequencer's context + the texture")


def apply_freezing(model: DeepArtNet, freeze: list[str], freeze_stages: int) -> dict[str, int]:
    """Freeze the named model parts and backbone stages 0..freeze_stages-1; everything else trains.

    BatchNorm layers whose parameters are all frozen are kept in eval mode (running statistics fixed).
    Returns counts of trainable / frozen parameters.
    """
    if not 0 <= freeze_stages <= model.backbone.num_stages:  # a config's value was checked at start-up
        raise ValueError(f"freeze_stages={freeze_stages}: backbone '{model.backbone.name}' has "
                         f"{model.backbone.num_stages} stages")
    for p in model.parameters():
        p.requires_grad_(True)
    for part in freeze:
        module = getattr(model, part, None)
        if isinstance(module, nn.Module):
            module.requires_grad_(False)
    stage_of = model.backbone.stage_of()
    for name, p in model.backbone.named_parameters():
        if stage_of[name] < freeze_stages:
            p.requires_grad_(False)

    model.frozen_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                          and any(True for _ in m.parameters()) and not any(p.requires_grad for p in m.parameters())]
    model.train(model.training)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    log.info("freezing: parts %s, backbone stages < %d -> %.2fM trainable, %.2fM frozen parameters",
             list(freeze) or "none", freeze_stages, trainable / 1e6, frozen / 1e6)
    return {"trainable": trainable, "frozen": frozen}
