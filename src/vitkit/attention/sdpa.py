"""PyTorch's fused `F.scaled_dot_product_attention`, optionally pinned to one of its sub-kernels."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .capability import HALF_DTYPES, BackendUnavailableError, Capability, Request
from .segments import Segments

CAPABILITY = Capability(devices=("cpu", "cuda", "mps", "xpu"))
FIX = "backend='sdpa' lets PyTorch pick among its kernels; backend='math' runs anywhere"
ABOUT = "torch.nn.functional.scaled_dot_product_attention"

# Sub-kernels that `sdpa:<name>` pins with `torch.nn.attention.sdpa_kernel`.
SUB_KERNELS: dict[str, SDPBackend] = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
SUB_CAPABILITIES: dict[str, Capability] = {
    # On CPU, SDPA's flash kernel is a tiled fp32/half implementation; on CUDA it is FlashAttention-2.
    "flash": Capability(devices=("cpu", "cuda"), max_head_dim=256, masks=frozenset({"bool", "additive"})),
    "efficient": Capability(devices=("cuda",), deterministic_backward=False),
    "cudnn": Capability(
        devices=("cuda",), dtypes=HALF_DTYPES, max_head_dim=128, min_compute_capability=(8, 0)
    ),
    "math": CAPABILITY,
}
# Deterministic backward on CUDA: the memory-efficient kernel's backward accumulates atomically.
_DETERMINISTIC_CUDA = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]


def _flash_reason(req: Request) -> str | None:
    """SDPA's flash kernel: no dropout on CPU; on CUDA (FlashAttention-2) half precision, Ampere+, no mask."""
    if req.device_type == "cpu" and req.dropout:
        return "has no attention dropout on CPU"
    if req.device_type != "cuda":
        return None
    if req.dtype not in HALF_DTYPES:
        return "takes float16/bfloat16 only on CUDA"
    if req.compute_capability is not None and req.compute_capability < (8, 0):
        return "needs compute capability >= 8.0 on CUDA"
    if req.mask is not None:
        return "takes no attention mask on CUDA"
    return None


# Limits of a sub-kernel beyond its capability.
SUB_REASONS: dict[str, Callable[[Request], str | None]] = {"flash": _flash_reason}


def run(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attn_mask: torch.Tensor | None,
    dropout_p: float,
    scale: float | None,
    deterministic: bool,
    sub_kernel: str | None = None,
) -> torch.Tensor:
    if sub_kernel is None and not (deterministic and q.is_cuda):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)
    kernels = [SUB_KERNELS[sub_kernel]] if sub_kernel else _DETERMINISTIC_CUDA
    try:
        with sdpa_kernel(kernels):
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale
            )
    except RuntimeError as err:
        if "No available kernel" not in str(err):
            raise
        name = f"sdpa:{sub_kernel}" if sub_kernel else "sdpa (deterministic)"
        raise BackendUnavailableError(
            f"attention backend '{name}' cannot run these inputs: PyTorch found no usable kernel "
            f"({str(err).splitlines()[0]}); fix: use backend='sdpa' or backend='math'"
        ) from err


def run_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Segments, *, dropout_p: float,
               scale: float | None, deterministic: bool) -> torch.Tensor:
    """Packed attention as one SDPA call per segment, on strided slices of q, k, v (no copies, no mask): the
    work is the sum of each segment's length squared, where a block-diagonal mask over the packed rows costs
    their length squared. Padding queries get zeros."""
    if _CPU_FLASH and q.device.type == "cpu" and not dropout_p and torch.is_grad_enabled() and (
            q.requires_grad or k.requires_grad or v.requires_grad) and q.dtype in _CPU_FLASH_DTYPES:
        return _SegmentFlashCPU.apply(q, k, v, segments.spans, scale)
    out, _ = _per_segment(q, k, v, segments.spans, lambda qs, ks, vs: (run(
        qs, ks, vs, attn_mask=None, dropout_p=dropout_p, scale=scale, deterministic=deterministic), None))
    return out.transpose(1, 2)  # (B, N, H, Dv) -> (B, H, N, Dv)


def _per_segment(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: list,
                 attend: Callable) -> tuple[torch.Tensor, list]:
    """Each segment's `attend(q, k, v)` -> ((1, H, q_len, Dv), extra) on strided slices, written into one
    (B, N, H, Dv) buffer (padding queries zero); returns it with the extras in segment order."""
    B, H, N, _ = q.shape
    out = q.new_zeros(B, N, H, v.shape[-1])
    extras = []
    for q_row, q_start, q_len, kv_row, kv_start, kv_len in spans:
        keys = slice(kv_start, kv_start + kv_len)
        seg, extra = attend(q[q_row : q_row + 1, :, q_start : q_start + q_len], k[kv_row : kv_row + 1, :, keys],
                            v[kv_row : kv_row + 1, :, keys])
        out[q_row, q_start : q_start + q_len] = seg[0].transpose(0, 1)
        extras.append(extra)
    return out, extras


_CPU_FLASH = hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward")
_CPU_FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


class _SegmentFlashCPU(torch.autograd.Function):
    """Per-segment attention for training on CPU with SDPA's own flash kernels, each segment's result written
    straight into one (B, N, H, Dv) buffer. Autograd keeps that buffer (the output projection saves it anyway)
    and each segment's logsumexp, where calling SDPA per segment keeps every segment's output a second time:
    one attention output per block (5% of a ViT-S training step's tensor memory)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: list, scale: float | None):
        out, lses = _per_segment(q, k, v, spans, lambda qs, ks, vs: (
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qs, ks, vs, scale=scale)))  # out, logsumexp
        ctx.save_for_backward(q, k, v, out, *lses)
        ctx.spans, ctx.scale = spans, scale
        return out.transpose(1, 2)  # (B, N, H, Dv) -> (B, H, N, Dv)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        q, k, v, out, *lses = ctx.saved_tensors
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for (q_row, q_start, q_len, kv_row, kv_start, kv_len), lse in zip(ctx.spans, lses, strict=True):
            queries, keys = slice(q_start, q_start + q_len), slice(kv_start, kv_start + kv_len)
            qs = q[q_row : q_row + 1, :, queries]
            ks, vs = k[kv_row : kv_row + 1, :, keys], v[kv_row : kv_row + 1, :, keys]
            seg = out[q_row : q_row + 1, queries].transpose(1, 2)  # (1, H, q_len, Dv)
            gq, gk, gv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                grad[q_row : q_row + 1, :, queries], qs, ks, vs, seg, lse, 0.0, False, scale=ctx.scale)
            dq[q_row : q_row + 1, :, queries] += gq
            dk[kv_row : kv_row + 1, :, keys] += gk
            dv[kv_row : kv_row + 1, :, keys] += gv
        return dq, dk, dv, None, None
