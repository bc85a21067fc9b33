"""Shared by the tests/test_interop_*.py files: seeded images, non-trivial random weights, tolerances."""

from __future__ import annotations

import torch
from torch import nn

ATOL = 1e-4  # fp32 parity bar for every peer library


def images(batch: int = 2, height: int = 32, width: int = 32, channels: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial values everywhere (zero-initialised tokens, unit norms, LayerScale) so a mix-up shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            offset = 1.0 if p.dim() == 1 and (name.endswith("weight") or "lambda" in name or "gamma" in name) else 0.0
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + offset)
    return module.eval()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)
