"""Shared by the tests/test_interop_*.py files: seeded images, weights at realistic magnitudes, tolerances, and
the parity check (fp32, then float64 where any difference in the function shows)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

ATOL = 1e-4  # fp32 parity bar for every peer library
# float64 bar: rounding leaves ~1e-13 here, while a swapped activation, norm eps (1e-5 vs 1e-6) or any other
# difference in the function moves O(1) outputs by 1e-6 or more.
ATOL64 = 1e-9


def images(batch: int = 2, height: int = 32, width: int = 32, channels: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


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


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial values everywhere (zero-initialised tokens, unit norms, LayerScale) so a mix-up shows; for
    tests that are not about peer parity (export, attention maps). Parity tests use `realistic_`."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            offset = 1.0 if p.dim() == 1 and (name.endswith("weight") or "lambda" in name or "gamma" in name) else 0.0
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + offset)
    return module.eval()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


@contextmanager
def float64(*modules: nn.Module) -> Iterator[None]:
    """The modules in float64 for the block, then back in float32 (exactly: every fp32 value is an fp64 value)."""
    for m in modules:
        m.double()
    try:
        yield
    finally:
        for m in modules:
            m.float()


def assert_parity(
    mine: Callable[[torch.Tensor], torch.Tensor],
    theirs: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *models: nn.Module,
    atol: float = ATOL,
) -> None:
    """mine(x) equals theirs(x) in fp32 within `atol`, and in float64 within ATOL64 (`models` are the modules
    behind the two callables, switched to float64 for the second check)."""
    with torch.no_grad():
        assert_close(mine(x), theirs(x), atol)
        with float64(*models):
            x64 = x.double()
            assert_close(mine(x64), theirs(x64), ATOL64)
