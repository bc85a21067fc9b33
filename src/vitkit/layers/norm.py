"""Normalisation layers by name: LayerNorm and RMSNorm, each with its epsilon."""

from __future__ import annotations

import functools

from torch import nn

NORMS = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}


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
        if norm is layer:
            # The bare torch classes default to eps=1e-5, not vitkit's 1e-6: keep what was asked for.
            return name, 1e-5 if eps is None else eps
    raise ValueError(f"norm_layer {norm!r} is not one vitkit can name; pass one of: {', '.join(NORMS)}")


def create_norm(norm: object, dim: int, eps: float) -> nn.Module:
    """A norm over `dim` from a name, class or partial; an eps the partial carries wins over `eps`."""
    name, own_eps = norm_name(norm)
    return NORMS[name](dim, eps=eps if own_eps is None else own_eps)
