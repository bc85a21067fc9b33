"""Numeric precisions by name, shared by training, embedding, evaluation and the benchmarks: 'fp32', 'bf16', 'fp16',
and 'auto': bf16 where the device multiplies bf16 matrices natively, else fp32."""

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


# CPU flags of a bf16 matrix engine (Intel AMX, AVX512-BF16), as torch.cpu.get_capabilities() names them.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether `device` multiplies bf16 matrices natively (faster than fp32), and the fact that says so."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        has = major >= 8
        return has, f"CUDA compute capability {major}.{minor} {'has' if has else 'has no'} bf16 tensor cores (8.0+)"
    if device.type == "cpu":
        caps = torch.cpu.get_capabilities()
        name = caps.get("cpu_name", "this CPU")
        flags = [flag for flag in CPU_BF16_FLAGS if caps.get(flag)]
        if flags:
            return True, f"{name} has {' and '.join(flags)}"
        return False, f"{name} has neither {' nor '.join(CPU_BF16_FLAGS)}: bf16 would run emulated, slower than fp32"
    return False, f"bf16 speed on {device.type} is not known to vitkit"


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """('bf16' or 'fp32', why) for 'auto'; any other precision name as it is, 'as asked'."""
    if precision != "auto":
        precision_dtype(precision)
        return precision, "as asked"
    native, why = native_bf16(device)
    return ("bf16" if native else "fp32"), why
