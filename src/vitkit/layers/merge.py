"""Patch merger: each merge x merge group of neighbouring tokens becomes one token, wider and projected to the width
a language model reads (Qwen2-VL, Qwen2.5-VL, Qwen3-VL and their deepstack mergers)."""

from __future__ import annotations

import torch
from torch import nn

from .norm import create_norm


class PatchMerger(nn.Module):
    """Tokens (..., N, D) whose groups of `merge_size`² cells lie consecutively -> (..., N / merge_size², out_dim).

    Norm, the group's tokens concatenated (merge_size² x D wide), fc1, exact GELU, fc2. The norm acts on each token
    before the concatenation, or with `norm_merged` on the concatenated group (Qwen3-VL's deepstack mergers).
    """

    def __init__(self, dim: int, out_dim: int, merge_size: int = 2, norm_layer: object = "layernorm",
                 norm_eps: float = 1e-6, norm_merged: bool = False) -> None:
        super().__init__()
        self.group = merge_size * merge_size
        self.width = dim * self.group
        self.norm_merged = norm_merged
        self.norm = create_norm(norm_layer, self.width if norm_merged else dim, norm_eps)
        self.fc1 = nn.Linear(self.width, self.width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(self.width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.group:
            raise ValueError(f"the patch merger takes groups of {self.group} tokens, got {x.shape[-2]} tokens")
        if not self.norm_merged:
            x = self.norm(x)
        x = x.reshape(*x.shape[:-2], -1, self.width)  # (..., N, D) -> (..., N / m², m² D)
        if self.norm_merged:
            x = self.norm(x)
        return self.fc2(self.act(self.fc1(x)))
