"""Texture statistics of several backbone stages (the `texture` config group): what a painting's style is largely
made of, read across layers rather than from the last stage's grid alone.

Per chosen stage, from its feature map (B, C, h, w):

- `meanstd`: each channel's mean and standard deviation over the grid (2C values; the statistics of adaptive
  instance normalisation);
- `gram`: those, plus the Gram matrix of k channels, G = F F^T / (h w) with F the (k, h w) map of the channels,
  its upper triangle (k (k + 1) / 2 values). The k channels are the stage's first k (`gram_reduce: first`: fixed,
  so a frozen backbone's statistics are computed once and cached) or a learned 1x1 projection of all of them to k
  (`gram_reduce: learned`: trains with the model, so the statistics depend on it and are never cached).

`stats` computes those raw statistics; `forward` turns them into what the heads read: the signed square root of
the Gram entries (`signed_sqrt`), each block (a stage's means, its deviations, its Gram entries) scaled to unit L2
norm times the square root of its size (`l2`: every value of order 1 whatever the block's size), and a LayerNorm
over the whole vector. The raw statistics are what a frozen backbone's feature cache keeps (a few thousand floats
per image, no intermediate map).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from deepart.core.errors import ConfigError, require, require_choice

KINDS = ("none", "meanstd", "gram")
REDUCTIONS = ("first", "learned")


class TextureStats(nn.Module):
    """Texture statistics of backbone stages `stages` (non-negative indices, in forward order) whose maps have
    `channels` channels; `out_dim` is the size of the vector the heads read."""

    def __init__(self, stages: list[int], channels: list[int], kind: str = "gram", gram_channels: int = 48,
                 gram_reduce: str = "first", signed_sqrt: bool = True, l2: bool = True):
        super().__init__()
        require_choice("texture.kind", kind, KINDS[1:])
        require_choice("texture.gram_reduce", gram_reduce, REDUCTIONS)
        require(isinstance(gram_channels, int) and gram_channels >= 1, "texture.gram_channels", gram_channels,
                "an integer >= 1")
        self.stages, self.channels = [int(s) for s in stages], [int(c) for c in channels]
        self.kind, self.gram_reduce = kind, gram_reduce
        self.signed_sqrt, self.l2 = bool(signed_sqrt), bool(l2)
        self.gram_k = [min(int(gram_channels), c) if gram_reduce == "first" else int(gram_channels)
                       for c in self.channels] if kind == "gram" else [0] * len(self.channels)
        self.reduce = nn.ModuleList(nn.Conv2d(c, k, kernel_size=1, bias=False)
                                    for c, k in zip(self.channels, self.gram_k)) \
            if kind == "gram" and gram_reduce == "learned" else None
        # (offset, size, is_gram) of every block of the raw vector, in order
        self.blocks: list[tuple[int, int, bool]] = []
        offset = 0
        for c, k in zip(self.channels, self.gram_k):
            for size, gram in ((c, False), (c, False), (k * (k + 1) // 2, True)):
                if size:
                    self.blocks.append((offset, size, gram))
                    offset += size
        self.raw_dim = self.out_dim = offset
        self.norm = nn.LayerNorm(self.out_dim)
        for n, k in enumerate(self.gram_k):  # the upper triangle's (row, column) pairs of each stage's Gram matrix
            if k:
                self.register_buffer(f"_triu{n}", torch.triu_indices(k, k), persistent=False)

    @property
    def cacheable(self) -> bool:
        """Whether the raw statistics depend on the backbone alone (none of this module's parameters)."""
        return self.reduce is None

    def describe(self) -> str:
        parts = f"{self.kind} of stages {self.stages} ({', '.join(map(str, self.channels))} channels"
        if self.kind == "gram":
            parts += f"; Gram of {'the first' if self.gram_reduce == 'first' else 'a learned 1x1 to'} " \
                     f"{'/'.join(map(str, self.gram_k))} channels"
        return f"{parts}) -> {self.out_dim} features"

    def stats(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The raw statistics (B, raw_dim) of the stages' maps (B, C_k, h_k, w_k), in float32."""
        if len(maps) != len(self.stages):
            raise ValueError(f"texture: {len(maps)} maps for {len(self.stages)} stages")
        out = []
        for n, (fmap, c, k) in enumerate(zip(maps, self.channels, self.gram_k)):
            if fmap.shape[1] != c:
                raise ConfigError(f"texture: stage {self.stages[n]} has {fmap.shape[1]} channels, the model was "
                                  f"built for {c}")
            x = fmap.float().flatten(2)                                    # (B, C, hw)
            var, mean = torch.var_mean(x, dim=2, correction=0)
            out += [mean, (var + 1e-6).sqrt()]
            if k:
                f = self.reduce[n](fmap).float().flatten(2) if self.reduce is not None else x[:, :k]
                gram = torch.bmm(f, f.transpose(1, 2)) / f.shape[2]        # (B, k, k)
                rows, cols = getattr(self, f"_triu{n}")
                out.append(gram[:, rows, cols])
        return torch.cat(out, dim=1)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw statistics (B, raw_dim) -> the vector the heads read (B, out_dim)."""
        parts = []
        for offset, size, gram in self.blocks:
            x = raw[:, offset:offset + size].float()
            if gram and self.signed_sqrt:
                x = x.sign() * (x.abs() + 1e-12).sqrt()
            if self.l2:
                x = nn.functional.normalize(x, dim=1) * math.sqrt(size)
            parts.append(x)
        return self.norm(torch.cat(parts, dim=1).to(self.norm.weight.dtype))


def build_texture(node, backbone) -> TextureStats | None:
    """The texture module of config node `texture` for `backbone` (None for kind none or a config without the
    group); stage indices may count from the end (-1: the last stage)."""
    if node is None or node.get("kind", "none") == "none":
        return None
    options = {k: v for k, v in node.items() if k != "stages"}
    n = backbone.num_stages
    stages = list(node.get("stages") or [-1])
    bad = [s for s in stages if not isinstance(s, int) or not -n <= s < n]
    if bad:
        raise ConfigError(f"texture.stages={stages}: backbone '{backbone.name}' has {n} stages (0..{n - 1}, or "
                          f"-1..-{n} from the last); {bad[0]} is not one of them")
    resolved = sorted({s % n for s in stages})
    return TextureStats(resolved, [backbone.stage_channels[s] for s in resolved], **options)
