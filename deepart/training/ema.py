"""An exponential moving average of a model's weights (`trainer.ema_decay`): validated, selected and exported
in place of the raw weights, which keep training."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """ema = decay * ema + (1 - decay) * weights after every optimizer step (floating-point parameters and
    buffers, e.g. BatchNorm statistics; integer buffers are copied)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema, live = self.model.state_dict(), model.state_dict()
        floats = [k for k, v in ema.items() if v.dtype.is_floating_point]
        torch._foreach_lerp_([ema[k] for k in floats], [live[k] for k in floats], 1 - self.decay)
        for k, v in ema.items():
            if not v.dtype.is_floating_point:
                v.copy_(live[k])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
