"""Numeric precisions by name, shared by training, embedding, evaluation and the benchmarks: 'fp32', 'bf16', 'fp16'."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_dtype(precision: str) -> torch.dtype:
    """The compute dtype of 'fp32' | 'bf16' | 'fp16'; ValueError naming the choices otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for bf16/fp16 (weights stay fp32, as in training); nothing for fp32."""
    dtype = precision_dtype(precision)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
