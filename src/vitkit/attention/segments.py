"""Packed sequences: which segment (image) each query and key slot belongs to, and the layouts kernels want.

Many sequences share one padded row; each token attends only to its own segment. A kernel's varlen path
takes a `Segments` and uses the form it needs: a dense block-diagonal mask, FlexAttention's block mask,
or the unpadded tokens with their sequence lengths (`unpad` / `pad_back` move between the layouts).
Padding queries attend to padding keys (so no row is empty); their outputs are meaningless and ignored.
"""

from __future__ import annotations

import functools

import torch


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

    @functools.cached_property
    def spans(self) -> list[tuple[int, int, int, int, int, int]]:
        """Each segment as (q_row, q_start, q_len, kv_row, kv_start, kv_len), in query order: where its queries
        and keys sit, for kernels that run one segment at a time on strided slices."""
        q_spans, kv_spans = self._spans(self.q_ids), self._spans(self.kv_ids)
        kv_of = {segment: where for segment, *where in kv_spans}
        missing = [segment for segment, *_ in q_spans if segment not in kv_of]
        if missing:
            raise ValueError(f"segments {missing[:5]} have queries but no keys")
        return [(*where, *kv_of[segment]) for segment, *where in q_spans]

    @staticmethod
    def _spans(ids: torch.Tensor) -> list[tuple[int, int, int, int]]:
        """(segment id, row, start, length) of every run of one segment's slots, row by row."""
        width = ids.shape[1]
        values, counts = torch.unique_consecutive(ids.reshape(-1), return_counts=True)
        starts = counts.cumsum(0) - counts  # flat slot where each run begins
        real = values >= 0
        return [(value, start // width, start % width, count) for value, start, count in
                zip(values[real].tolist(), starts[real].tolist(), counts[real].tolist(), strict=True)]

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


def unpad(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> (total, H, D): the slots in `index` (flattened batch-major)."""
    B, H, N, D = x.shape
    return x.transpose(1, 2).reshape(B * N, H, D).index_select(0, index)


def pad_back(out: torch.Tensor, index: torch.Tensor, q_shape: tuple[int, ...]) -> torch.Tensor:
    """(total, H, Dv) at the real query slots -> (B, H, N, Dv) for q of `q_shape` (B, H, N, D), zeros at padding."""
    B, H, N, D = *q_shape[:3], out.shape[-1]
    full = out.new_zeros(B * N, H, D).index_copy(0, index, out)
    return full.view(B, N, H, D).transpose(1, 2)  # (B, N, H, D) -> (B, H, N, D)
