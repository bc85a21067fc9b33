"""xFormers `memory_efficient_attention`: (B, M, H, K) layout, masks as an additive attn_bias.

Packed sequences run on the unpadded tokens with a `BlockDiagonalMask`, so no mask tensor is built.
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch

from .capability import Capability, Request
from .segments import Segments, pad_back, unpad

CAPABILITY = Capability(
    devices=("cuda",),
    dtypes=(torch.float16, torch.bfloat16, torch.float32),
    deterministic_backward=False,  # its backward accumulates with atomics
)
FIX = "pip install 'vitkit[gpu]' (xformers) on a CUDA machine"
ABOUT = "xformers.ops.memory_efficient_attention"


@functools.cache
def ops() -> ModuleType | None:
    try:
        import xformers.ops as xops
    except Exception:  # a wheel built for another torch raises more than ImportError
        return None
    return xops


def package_reason(req: Request) -> str | None:
    return None if ops() is not None else "needs the xformers package, which is not installed"


def _bias(attn_mask: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """A (B, H, N, M) additive bias in q's dtype whose rows start 8-aligned, as xformers requires."""
    b, h, n, m = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    if attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
            ~attn_mask, float("-inf")
        )
    padded = torch.empty(b, h, n, -(-m // 8) * 8, dtype=q.dtype, device=q.device)
    bias = padded[..., :m]
    bias.copy_(attn_mask.expand(b, h, n, m))
    return bias


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
    bias = None if attn_mask is None else _bias(attn_mask, q, k)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, N, D) -> (B, N, H, D)
    out = ops().memory_efficient_attention(q, k, v, attn_bias=bias, p=dropout_p, scale=scale)
    return out.transpose(1, 2)  # (B, M, H, K) -> (B, H, N, D)


def run_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Segments, *, dropout_p: float,
               scale: float | None, deterministic: bool) -> torch.Tensor:
    """The unpadded tokens of every segment as one sequence, kept apart by a `BlockDiagonalMask`."""
    q_index, _, _, q_lens = segments.unpadded_q
    kv_index, _, _, kv_lens = segments.unpadded_kv
    xops = ops()
    bias = xops.fmha.attn_bias.BlockDiagonalMask.from_seqlens(q_seqlen=q_lens, kv_seqlen=kv_lens)
    qu, ku, vu = (unpad(t, i)[None] for t, i in ((q, q_index), (k, kv_index), (v, kv_index)))  # (1, total, H, D)
    out = xops.memory_efficient_attention(qu, ku, vu, attn_bias=bias, p=dropout_p, scale=scale)
    return pad_back(out[0], q_index, tuple(q.shape))
