"""Pooling of the token sequence into one vector per image, with attention weights where they exist: the second
half of a `sequencer` option. The contract is `Pooling`."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Pooling(Protocol):
    """What DeepArtNet needs of a pooling. It is built as `_target_(dim=<token size>, **keys)` (an nn.Module) and
    maps (B, N, dim) tokens to ((B, dim) context, (B, N) weights summing to 1 over N, or None when it has
    none, e.g. mean pooling). The weights are what the attention overlays show."""

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class AdditiveAttention(nn.Module):
    """Bahdanau attention pooling: score_n = v . tanh(W h_n + b), a = softmax(score), c = sum_n a_n h_n."""

    def __init__(self, dim: int, hidden_dim: int = 256):
        super().__init__()
        self.proj = nn.Linear(dim, hidden_dim)
        self.score = nn.Linear(hidden_dim, 1, bias=False)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(torch.tanh(self.proj(h))).squeeze(-1)  # (B, N)
        weights = scores.float().softmax(dim=-1).to(h.dtype)       # (B, N)
        context = torch.einsum("bn,bnd->bd", weights, h)           # (B, dim)
        return context, weights


class MeanPool(nn.Module):
    """Global average pooling (the plain-CNN baseline): no attention weights."""

    def __init__(self, dim: int):
        super().__init__()

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        return h.mean(dim=1), None  # (B, dim)
