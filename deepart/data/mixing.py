"""Mixup and CutMix of a training batch, for multi-task soft targets.

timm's `Mixup` draws the mixing (lambda, the CutMix box, mixup or CutMix, per batch / pair / element) and mixes
the images; instead of one task's labels it is handed the batch positions (`arange(n)` as n classes), so the
soft target it returns is the mixing matrix M: M[i, k] is the share of sample k in mixed image i (rows sum to
1). Each task's soft target is then M times its one-hot labels (deepart.objectives.losses.soft_targets), where
a sample without a label for the task (-1) contributes nothing.

The draws are a function of (seed, rank, global step) alone, like the data pipeline's augmentation, so a
resumed run mixes exactly as an uninterrupted one and nothing else's random numbers move.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from timm.data import Mixup


class BatchMixer:
    """`mixer(images, step)` -> (mixed images as float in [0, 1], mixing matrix (B, B)). Images are paired with
    their mirror in the batch (i with B-1-i); with an odd batch the last image stays as it is."""

    def __init__(self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5, mode: str = "batch", seed: int = 0, rank: int = 0):
        """`mode` (core.config.MIX_MODES): one draw for the whole batch, one per pair of images, one per image."""
        self.mixup = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=prob, switch_prob=switch_prob,
                           mode=mode, label_smoothing=0.0)
        self.seed, self.rank = seed, rank

    def __call__(self, images: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float().clone()
        mix = torch.eye(len(x), device=x.device)
        n = len(x) - len(x) % 2
        if n < 2:
            return x, mix
        self.mixup.num_classes = n
        saved = np.random.get_state()  # timm draws from NumPy's global RNG: seeded for this step, then restored
        try:
            np.random.seed(int(np.random.SeedSequence([self.seed, self.rank, step]).generate_state(1)[0]))
            mixed, target = self.mixup(x[:n], torch.arange(n, device=x.device))
        finally:
            np.random.set_state(saved)
        x[:n], mix[:n, :n] = mixed, target.to(mix.dtype)
        return x, mix


def mixer_from_config(augment: Mapping[str, Any] | None, seed: int, rank: int = 0) -> BatchMixer | None:
    """The batch mixer of the `augment` config; None when mixup and CutMix are both off (alpha 0)."""
    if augment is None or not (augment["mixup_alpha"] or augment["cutmix_alpha"]):
        return None
    return BatchMixer(float(augment["mixup_alpha"]), float(augment["cutmix_alpha"]), float(augment["mix_prob"]),
                      float(augment["switch_prob"]), str(augment["mix_mode"]), seed, rank)
