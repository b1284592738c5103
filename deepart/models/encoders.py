"""Token encoders, the first half of a `sequencer` option (encoder + pooling, conf/sequencer/*.yaml):
(B, N, dim) tokens of the h x w grid -> (B, N, out_dim) contextualised tokens. The contract is `Encoder`."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from deepart.core.errors import require, require_choice


@runtime_checkable
class Encoder(Protocol):
    """What DeepArtNet needs of an encoder. It is built as `_target_(dim=<token size>, **keys)` (an nn.Module),
    says its output size in `out_dim`, and maps (B, N, dim) tokens in raster order of the (h, w) grid
    (N = h * w) to (B, N, out_dim). Adding one: a class here and a conf/sequencer/<name>.yaml naming it."""

    out_dim: int

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor: ...


class RNNEncoder(nn.Module):
    """LSTM or GRU over the grid tokens in raster order (bidirectional by default)."""

    def __init__(self, dim: int, cell: str = "lstm", hidden_size: int = 256, num_layers: int = 2,
                 bidirectional: bool = True, dropout: float = 0.0):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}
        require_choice("sequencer.encoder.cell", cell, list(rnn))
        self.rnn = rnn[cell](dim, hidden_size, num_layers=num_layers, batch_first=True,
                             bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.out_dim = hidden_size * (2 if bidirectional else 1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        out, _ = self.rnn(tokens)  # (B, N, out_dim)
        return out


def sincos_2d(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes, (h*w, dim), raster order."""
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1)))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    parts = []
    for coord in (ys.flatten(), xs.flatten()):
        angle = coord[:, None] * freq[None, :]
        parts += [angle.sin(), angle.cos()]
    codes = torch.cat(parts, dim=1)
    return nn.functional.pad(codes, (0, dim - codes.shape[1]))


class TransformerEncoder(nn.Module):
    """Pre-norm transformer encoder over the grid tokens with 2-D sine-cosine positions."""

    def __init__(self, dim: int, num_layers: int = 2, num_heads: int = 8, ff_dim: int = 1024,
                 dropout: float = 0.1):
        super().__init__()
        require(num_heads > 0 and dim % num_heads == 0, "sequencer.encoder.num_heads", num_heads,
                f"a divisor of model.dim ({dim})")
        layer = nn.TransformerEncoderLayer(dim, num_heads, ff_dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.out_dim = dim

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        pos = sincos_2d(grid[0], grid[1], tokens.shape[-1], tokens.device).to(tokens.dtype)
        return self.norm(self.encoder(tokens + pos))  # (B, N, dim)
