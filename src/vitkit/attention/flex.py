"""FlexAttention (`torch.nn.attention.flex_attention`), compiled once per process and reused.

Masks become a `score_mod`; packed sequences a document `BlockMask` (blocks outside every segment are
skipped). PyTorch has no flex backward on CPU, so there it is inference-only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .capability import Capability
from .segments import Segments

CAPABILITY = Capability(
    devices=("cpu", "cuda"),
    dtypes=(torch.float16, torch.bfloat16, torch.float32),
    dropout=False,
    backward_devices=("cuda",),
)
FIX = "use backend='sdpa' (or 'math'), or run flex on CUDA / under torch.no_grad()"
ABOUT = "torch.nn.attention.flex_attention, compiled"


@functools.cache
def compiled(dynamic: bool | None = None) -> Callable[..., torch.Tensor]:
    """flex_attention compiled once per process (`dynamic` as torch.compile takes it)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=dynamic)


def _score_mod(attn_mask: torch.Tensor, shape: tuple[int, int, int, int]) -> Callable[..., torch.Tensor]:
    # Materialised: a broadcast (stride-0) view trips Inductor's CPU codegen when shapes change.
    mask = attn_mask.expand(shape).contiguous()
    if mask.dtype == torch.bool:

        def keep(score, b, h, q_idx, kv_idx):
            return torch.where(mask[b, h, q_idx, kv_idx], score, float("-inf"))

        return keep

    def add(score, b, h, q_idx, kv_idx):
        return score + mask[b, h, q_idx, kv_idx]

    return add


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
    assert dropout_p == 0.0, "flex has no dropout; the dispatcher checks this first"
    if not torch.is_grad_enabled():  # no_grad with requires_grad inputs: keep autograd out of the kernel
        q, k, v = q.detach(), k.detach(), v.detach()
        attn_mask = None if attn_mask is None else attn_mask.detach()
    score_mod = None
    if attn_mask is not None:
        score_mod = _score_mod(attn_mask, (q.shape[0], q.shape[1], q.shape[2], k.shape[2]))
    return compiled()(q, k, v, score_mod=score_mod, scale=scale)


def run_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Segments, *, dropout_p: float,
               scale: float | None, deterministic: bool) -> torch.Tensor:
    """Attention under the segments' document block mask."""
    assert dropout_p == 0.0, "flex has no dropout; the dispatcher checks this first"
    if not torch.is_grad_enabled():  # no_grad with requires_grad inputs: keep autograd out of the kernel
        q, k, v = q.detach(), k.detach(), v.detach()
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    # Compiled per shape: Inductor's CPU code for dynamic shapes fails on packed layouts.
    return compiled(dynamic=False)(q, k, v, block_mask=segments.block_mask, scale=scale)
