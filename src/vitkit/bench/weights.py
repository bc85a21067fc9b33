"""Weights at a trained model's magnitudes, for parity checks and benchmarks on models nobody trained."""

from __future__ import annotations

import torch
from torch import nn


def realistic_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Weights at a trained ViT's magnitudes, in place; returns the module in eval mode.

    Matrices (Linear, conv, fused in-projections): N(0, 1/fan_in), LeCun / big_vision scale, so every layer's
    output is O(1) as in a trained tower; norm and LayerScale gains 1 + N(0, 0.2²); biases N(0, 0.1²); tokens,
    position tables, latents and projections N(0, 0.5²). At timm's default init (std 0.02) activations are ~0.1,
    where a swapped GELU moves outputs by ~1e-5 and passes a 1e-4 tolerance; here it moves them by ~1e-3.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)
            if p.dim() >= 2 and "weight" in leaf:
                p.copy_(noise / p[0].numel() ** 0.5)  # fan_in: every dim but the output one
            elif p.dim() == 1 and ("weight" in leaf or "gamma" in leaf or "lambda" in leaf):
                p.copy_(1.0 + 0.2 * noise)
            elif p.dim() == 1 and "bias" in leaf:
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.5 * noise)
    return module.eval()
