"""Shared by the tests/test_interop_*.py files: seeded images, weights at realistic magnitudes, tolerances, and
the parity check (fp32, then float64 where any difference in the function shows)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from vitkit.bench.weights import realistic_  # noqa: F401  (re-exported: every parity test draws its weights so)

ATOL = 1e-4  # fp32 parity bar for every peer library
# float64 bar: rounding leaves ~1e-13 here, while a swapped activation, norm eps (1e-5 vs 1e-6) or any other
# difference in the function moves O(1) outputs by 1e-6 or more.
ATOL64 = 1e-9


def images(batch: int = 2, height: int = 32, width: int = 32, channels: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


def cuda_kernel_usable(backend: str) -> bool:
    """Whether `backend` runs packed (varlen) attention on this machine's CUDA device; False without one."""
    if not torch.cuda.is_available():
        return False
    from vitkit.attention import BackendUnavailableError, Segments, varlen_attention

    q = torch.zeros(1, 1, 1, 64, device="cuda", dtype=torch.float16)
    try:
        varlen_attention(q, q, q, Segments(torch.zeros(1, 1, dtype=torch.long, device="cuda")), backend=backend)
    except BackendUnavailableError:
        return False
    return True


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
