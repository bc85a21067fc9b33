"""Variable-length (packed) attention: many sequences share one padded row, each token attends only its own.

A `Segments` says which segment (image) every query and key slot belongs to; -1 marks padding. Each
backend runs it on the kernel it has for the job:

- `flash`: `flash_attn_varlen_func` on the unpadded tokens (total, H, D) with `cu_seqlens`;
- `xformers`: `memory_efficient_attention` with a `BlockDiagonalMask` over the unpadded tokens;
- `flex`: a document `BlockMask` (blocks outside every segment are skipped);
- `sdpa`, `sdpa:<kernel>`, `math`: a dense block-diagonal boolean mask.

Padding queries attend to padding keys (so no row is empty); their outputs are meaningless and ignored.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from . import flash, xformers
from .capability import BackendUnavailableError, Request
from .dispatch import BACKENDS, canonical_name

# `auto` order for packed attention: the varlen kernels first, a dense mask only where they cannot run.
VARLEN_AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("flash", "xformers", "sdpa", "flex", "math"),
    "cpu": ("sdpa", "math"),  # flex recompiles for every packed shape: never picked on CPU
}
_UNPADDED = ("flash", "xformers")  # kernels that take the tokens without padding, no mask tensor


class Segments:
    """Which segment each query slot (B, N) and key slot (B, M) belongs to; -1 = padding.

    In each row the slots of one segment are contiguous and segments come in the same order for
    queries and keys (a segment may have a different number of queries and keys, e.g. a pooling
    latent attending to an image). Derived forms (mask, block mask, cu_seqlens) are built once and
    shared by every layer.
    """

    def __init__(self, q_ids: torch.Tensor, kv_ids: torch.Tensor | None = None) -> None:
        kv_ids = q_ids if kv_ids is None else kv_ids
        if q_ids.dim() != 2 or kv_ids.dim() != 2 or q_ids.shape[0] != kv_ids.shape[0]:
            raise ValueError(
                f"segment ids must be (batch, tokens) for queries and keys with the same batch, got "
                f"{tuple(q_ids.shape)} and {tuple(kv_ids.shape)}"
            )
        if q_ids.dtype.is_floating_point or kv_ids.dtype.is_floating_point:
            raise TypeError(f"segment ids must be integers, got {q_ids.dtype} / {kv_ids.dtype}")
        self.q_ids = q_ids
        self.kv_ids = kv_ids

    @property
    def device(self) -> torch.device:
        return self.q_ids.device

    @functools.cached_property
    def dense_mask(self) -> torch.Tensor:
        """(B, 1, N, M) bool, True where query and key share a segment (padding attends padding)."""
        return (self.q_ids[:, :, None] == self.kv_ids[:, None, :])[:, None]

    @functools.cached_property
    def block_mask(self):  # -> torch.nn.attention.flex_attention.BlockMask
        """FlexAttention's document mask: whole blocks outside every segment are never computed."""
        from torch.nn.attention.flex_attention import create_block_mask

        q_ids, kv_ids = self.q_ids, self.kv_ids

        def same_segment(b, h, q_idx, kv_idx):
            return q_ids[b, q_idx] == kv_ids[b, kv_idx]

        B, N = q_ids.shape
        return create_block_mask(same_segment, B, None, N, kv_ids.shape[1], device=q_ids.device)

    @staticmethod
    def _unpadded(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, list[int]]:
        """(flat indices of the real slots, cu_seqlens int32, max length, lengths) of one side."""
        flat = ids.reshape(-1)
        index = torch.nonzero(flat >= 0).squeeze(1)
        _, counts = torch.unique_consecutive(flat[index], return_counts=True)
        cu = torch.zeros(len(counts) + 1, dtype=torch.int32, device=ids.device)
        cu[1:] = counts.cumsum(0)
        lengths = counts.tolist()
        return index, cu, max(lengths, default=0), lengths

    @functools.cached_property
    def unpadded_q(self) -> tuple[torch.Tensor, torch.Tensor, int, list[int]]:
        return self._unpadded(self.q_ids)

    @functools.cached_property
    def unpadded_kv(self) -> tuple[torch.Tensor, torch.Tensor, int, list[int]]:
        if self.kv_ids is self.q_ids:
            return self.unpadded_q
        return self._unpadded(self.kv_ids)


def _request(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float,
             deterministic: bool) -> Request:
    req = Request.of(q, k, v, None, dropout_p, deterministic)
    return req if name in _UNPADDED else dataclasses.replace(req, mask="bool")


def choose_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                  deterministic: bool = False) -> str:
    """The backend `auto` runs packed attention on: the first usable one in this device's order."""
    for name in VARLEN_AUTO_ORDER.get(q.device.type, ("sdpa", "math")):
        if BACKENDS[name].reason(_request(name, q, k, v, dropout_p, deterministic)) is None:
            return name
    return "math"


def _pad_back(out: torch.Tensor, index: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
    """(total, H, D) at the real query slots -> (B, H, N, D), zeros at padding."""
    B, H, N, D = shape
    full = out.new_zeros(B * N, H, D).index_copy(0, index, out)
    return full.view(B, N, H, D).transpose(1, 2)  # (B, N, H, D) -> (B, H, N, D)


def _unpad(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> (total, H, D): the slots in `index` (flattened batch-major)."""
    B, H, N, D = x.shape
    return x.transpose(1, 2).reshape(B * N, H, D).index_select(0, index)


def _run_flash(q, k, v, seg: Segments, dropout_p: float, scale: float | None, deterministic: bool) -> torch.Tensor:
    q_index, cu_q, max_q, _ = seg.unpadded_q
    kv_index, cu_k, max_k, _ = seg.unpadded_kv
    qu, ku, vu = _unpad(q, q_index), _unpad(k, kv_index), _unpad(v, kv_index)
    hopper = q.is_cuda and torch.cuda.get_device_capability(q.device) >= (9, 0)
    if flash.fa3() is not None and hopper and dropout_p == 0.0:
        out = flash.fa3().flash_attn_varlen_func(
            qu, ku, vu, cu_q, cu_k, max_q, max_k, softmax_scale=scale, causal=False, deterministic=deterministic
        )
        out = out[0] if isinstance(out, tuple) else out
    else:
        out = flash.fa2().flash_attn_varlen_func(
            qu, ku, vu, cu_q, cu_k, max_q, max_k, dropout_p=dropout_p, softmax_scale=scale, causal=False,
            deterministic=deterministic,
        )
    return _pad_back(out, q_index, tuple(q.shape))


def _run_xformers(q, k, v, seg: Segments, dropout_p: float, scale: float | None) -> torch.Tensor:
    q_index, _, _, q_lens = seg.unpadded_q
    kv_index, _, _, kv_lens = seg.unpadded_kv
    xops = xformers.ops()
    bias = xops.fmha.attn_bias.BlockDiagonalMask.from_seqlens(q_seqlen=q_lens, kv_seqlen=kv_lens)
    qu, ku, vu = (_unpad(t, i)[None] for t, i in ((q, q_index), (k, kv_index), (v, kv_index)))  # (1, total, H, D)
    out = xops.memory_efficient_attention(qu, ku, vu, attn_bias=bias, p=dropout_p, scale=scale)
    return _pad_back(out[0], q_index, tuple(q.shape))


@functools.cache
def _flex_static():
    """flex_attention compiled per shape: Inductor's CPU code for dynamic shapes fails on packed layouts."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _run_flex(q, k, v, seg: Segments, scale: float | None) -> torch.Tensor:
    if not torch.is_grad_enabled():  # no_grad with requires_grad inputs: keep autograd out of the kernel
        q, k, v = q.detach(), k.detach(), v.detach()
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return _flex_static()(q, k, v, block_mask=seg.block_mask, scale=scale)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    segments: Segments,
    *,
    backend: str = "auto",
    dropout_p: float = 0.0,
    scale: float | None = None,
    deterministic: bool = False,
) -> torch.Tensor:
    """Attention on (B, H, N, D) q and (B, H, M, D) k, v where each query sees only keys of its own segment.

    Same contract as `scaled_dot_product_attention` otherwise: a named backend that cannot run these
    inputs raises `BackendUnavailableError` with the reason and the fix; `auto` picks the fastest usable
    varlen kernel (`flash` -> `xformers` -> `sdpa` on CUDA, `sdpa` on CPU).
    """
    if not isinstance(segments, Segments):
        raise TypeError(f"segments must be a vitkit.attention.Segments, got {type(segments).__name__}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D (batch, heads, tokens, head_dim), got {q.dim()}/{k.dim()}/{v.dim()}-D")
    if segments.q_ids.shape != (q.shape[0], q.shape[2]) or segments.kv_ids.shape != (k.shape[0], k.shape[2]):
        raise ValueError(
            f"segment ids {tuple(segments.q_ids.shape)} / {tuple(segments.kv_ids.shape)} do not match q "
            f"(B, N) = {(q.shape[0], q.shape[2])} and k (B, M) = {(k.shape[0], k.shape[2])}"
        )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    name = canonical_name(backend)
    if name == "auto":
        name = choose_varlen(q, k, v, dropout_p, deterministic)
    else:
        why = BACKENDS[name].reason(_request(name, q, k, v, dropout_p, deterministic))
        if why is not None:
            raise BackendUnavailableError(
                f"attention backend '{name}' cannot run packed attention here: it {why} "
                f"(inputs: {q.dtype} on {q.device}, head_dim {q.shape[-1]}); fix: {BACKENDS[name].fix}"
            )
    if name == "flash":
        return _run_flash(q, k, v, segments, dropout_p, scale, deterministic)
    if name == "xformers":
        return _run_xformers(q, k, v, segments, dropout_p, scale)
    if name == "flex":
        return _run_flex(q, k, v, segments, scale)
    return BACKENDS[name].run(
        q, k, v, attn_mask=segments.dense_mask, dropout_p=dropout_p, scale=scale, deterministic=deterministic
    )
