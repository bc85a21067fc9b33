"""Normalisation layers by name: LayerNorm and RMSNorm, each with its epsilon."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.RMSNorm):
    """`nn.RMSNorm` whose scale follows the input's dtype: under autocast (bf16 tokens, fp32 weights) it still runs
    torch's fused kernel, which keeps the statistics in fp32, rather than a slower unfused fallback."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.to(x.dtype)
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


NORMS = {"layernorm": nn.LayerNorm, "rmsnorm": RMSNorm}


def norm_name(norm: object) -> tuple[str, float | None]:
    """(name, eps or None) of a norm given as a name, a class, or a partial with `eps`."""
    if isinstance(norm, str):
        if norm not in NORMS:
            raise ValueError(f"unknown norm_layer {norm!r}; choose one of: {', '.join(NORMS)}")
        return norm, None
    eps = None
    if isinstance(norm, functools.partial):
        eps, norm = norm.keywords.get("eps"), norm.func
    for name, layer in NORMS.items():
        if norm in layer.__mro__[:2] and norm is not nn.Module:  # the class, or the torch class it refines
            # The bare torch classes default to eps=1e-5, not vitkit's 1e-6: keep what was asked for.
            return name, 1e-5 if eps is None else eps
    raise ValueError(f"norm_layer {norm!r} is not one vitkit can name; pass one of: {', '.join(NORMS)}")


def create_norm(norm: object, dim: int, eps: float) -> nn.Module:
    """A norm over `dim` from a name, class or partial; an eps the partial carries wins over `eps`."""
    name, own_eps = norm_name(norm)
    return NORMS[name](dim, eps=eps if own_eps is None else own_eps)
