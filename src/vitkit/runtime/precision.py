"""Training's precisions by name: 'fp32', and 'bf16' / 'fp16' under autocast (the weights stay fp32); and whether a
device multiplies bf16 matrices natively (what inference's 'auto' asks, see `inference.py`)."""

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
