"""FlashAttention from the `flash_attn` package (FA2), or FA3's `flash_attn_interface` on Hopper.

flash-attn wants (B, S, H, D); vitkit's contract is (B, H, N, D), so q/k/v are transposed views
(no copy when they come from a fused qkv projection, whose last dim is already contiguous). Packed
sequences run `flash_attn_varlen_func` on the unpadded tokens.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch

from .capability import HALF_DTYPES, Capability, Request
from .segments import Segments, pad_back, unpad

CAPABILITY = Capability(
    devices=("cuda",),
    dtypes=HALF_DTYPES,
    max_head_dim=256,
    masks=frozenset(),  # flash-attn has causal and sliding windows, no arbitrary mask
    min_compute_capability=(8, 0),
)
FIX = "install flash-attn on a CUDA machine (pip install flash-attn --no-build-isolation) and use fp16/bf16"


@functools.cache
def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except Exception:  # a broken CUDA build raises more than ImportError
        return None


def fa3() -> ModuleType | None:
    """FlashAttention-3 (Hopper), when its interface module is installed."""
    return _module("flash_attn_interface")


def fa2() -> ModuleType | None:
    return _module("flash_attn")


def about() -> str:
    """What `flash` runs here, for the usability report."""
    return "FlashAttention-3" if fa3() is not None else "FlashAttention-2 (flash_attn)"


def package_reason(req: Request) -> str | None:
    use_fa3 = fa3() is not None and req.compute_capability is not None and req.compute_capability >= (9, 0)
    if use_fa3 and req.dropout and fa2() is None:
        return "has only FlashAttention-3 here, which has no attention dropout (flash_attn, FA2, is not installed)"
    if fa2() is None and not use_fa3:
        return "needs the flash_attn package, which is not installed"
    return None


def _version(q: torch.Tensor, dropout_p: float) -> tuple[ModuleType, dict[str, float]]:
    """FA3 on Hopper when installed and no dropout is asked (it has none), else FA2; with its extra kwargs."""
    hopper = q.is_cuda and torch.cuda.get_device_capability(q.device) >= (9, 0)
    if fa3() is not None and hopper and dropout_p == 0.0:
        return fa3(), {}
    return fa2(), {"dropout_p": dropout_p}


def _output(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The attention output: some FA3 releases return (out, softmax_lse)."""
    return out[0] if isinstance(out, tuple) else out


def run(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None,
    dropout_p: float,
    scale: float | None,
    deterministic: bool,
) -> torch.Tensor:
    assert attn_mask is None, "flash takes no mask; the dispatcher checks this first"
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, N, D) -> (B, N, H, D)
    module, extra = _version(q, dropout_p)
    out = module.flash_attn_func(q, k, v, softmax_scale=scale, causal=False, deterministic=deterministic, **extra)
    return _output(out).transpose(1, 2)  # (B, N, H, D) -> (B, H, N, D)


def run_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Segments, *, dropout_p: float,
               scale: float | None, deterministic: bool) -> torch.Tensor:
    """`flash_attn_varlen_func` on the unpadded tokens (total, H, D) with each side's `cu_seqlens`."""
    q_index, cu_q, max_q, _ = segments.unpadded_q
    kv_index, cu_k, max_k, _ = segments.unpadded_kv
    module, extra = _version(q, dropout_p)
    out = module.flash_attn_varlen_func(
        unpad(q, q_index), unpad(k, kv_index), unpad(v, kv_index), cu_q, cu_k, max_q, max_k,
        softmax_scale=scale, causal=False, deterministic=deterministic, **extra,
    )
    return pad_back(_output(out), q_index, tuple(q.shape))
