"""Reference attention written out in matrix products: runs anywhere, returns its weights on request."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .capability import HALF_DTYPES, Capability

CAPABILITY = Capability(devices=("cpu", "cuda", "mps", "xpu", "meta"))
FIX = "backend='math' runs on every device and dtype"
ABOUT = "reference matmul-softmax-matmul, returns weights for maps"


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor | None = None, scale: float | None = None
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) as (B, H, N, M); float32 for half inputs."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if q.dtype in HALF_DTYPES:
        q, k = q.float(), k.float()
    scores = (q * scale) @ k.transpose(-2, -1)  # (B, H, N, M)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.to(scores.dtype)
    # A query that may attend to nothing gets zero weights (as SDPA gives), not NaN.
    dead = scores.isneginf().all(dim=-1, keepdim=True)
    return scores.masked_fill(dead, 0.0).softmax(dim=-1).masked_fill(dead, 0.0)


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
    attn = attention_weights(q, k, attn_mask, scale)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p)
    return attn.to(v.dtype) @ v
