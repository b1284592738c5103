"""Pooling of the token sequence into one vector per image, with attention weights where they exist."""
from __future__ import annotations

import torch
from torch import nn


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
