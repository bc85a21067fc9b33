"""The practical ceiling: how fast this device multiplies matrices of exactly the shapes a model's block uses.

A ViT's time goes almost all into these products, so a model's achieved FLOP/s over this rate is how
much of the reachable speed it gets (its efficiency), whatever the hardware.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from .flops import Gemm
from .measure import time_steps


@dataclass(frozen=True)
class GemmTiming:
    gemm: Gemm
    seconds: float  # median of the timed repetitions

    @property
    def gflops_per_s(self) -> float:
        return self.gemm.flops / self.seconds / 1e9


@dataclass(frozen=True)
class Ceiling:
    """The combined rate of a set of products, weighted as the model runs them (total FLOPs / total time)."""

    timings: tuple[GemmTiming, ...]

    @property
    def gflops_per_s(self) -> float:
        return sum(t.gemm.flops for t in self.timings) / sum(t.seconds for t in self.timings) / 1e9


def _operand(rows: int, cols: int, transposed: bool, gemm: Gemm, generator: torch.Generator, device: torch.device,
             dtype: torch.dtype) -> torch.Tensor:
    """A random (batch, rows, cols) operand, stored contiguous or as the transposed view of (batch, cols, rows)."""
    shape = (gemm.batch, cols, rows) if transposed else (gemm.batch, rows, cols)
    tensor = torch.randn(shape, generator=generator).to(device, dtype)
    return (tensor.mT if transposed else tensor).squeeze(0)


def time_gemm(gemm: Gemm, device: torch.device, dtype: torch.dtype, warmup: int, reps: int) -> GemmTiming:
    """Median seconds of one product of `gemm`'s shape and layout on random `dtype` matrices."""
    generator = torch.Generator().manual_seed(0)
    left = _operand(gemm.m, gemm.k, gemm.left_t, gemm, generator, device, dtype)
    right = _operand(gemm.k, gemm.n, gemm.right_t, gemm, generator, device, dtype)
    seconds = time_steps(lambda: torch.matmul(left, right), device, warmup, reps)
    return GemmTiming(gemm, statistics.median(seconds))


def measure_ceiling(gemms: list[Gemm], device: torch.device, dtype: torch.dtype, warmup: int = 1,
                    reps: int = 5) -> Ceiling:
    """Time each product (same device, dtype and threads as the candidates) and combine them."""
    return Ceiling(tuple(time_gemm(g, device, dtype, warmup, reps) for g in gemms))


def matrix_rates(device: torch.device, model: str = "vit_base_patch16_224", batch_size: int = 4,
                 dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)) -> dict[str, float]:
    """GFLOP/s at which `device` multiplies matrices of `model`'s block shapes (inference, `batch_size` images) in
    each of `dtypes`: what `vitkit doctor` shows, and what 'auto' precision bets on."""
    from ..models import get_config
    from .flops import block_gemms

    gemms = block_gemms(get_config(model), batch_size)
    return {str(dtype).removeprefix("torch."): measure_ceiling(gemms, device, dtype, reps=3).gflops_per_s
            for dtype in dtypes}
