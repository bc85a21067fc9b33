"""A tower's features as rows: one block's tokens, with or without the final norm, pooled one way.

`FeatureSpec.of(model, pool=..., layer=...)` checks the choice against the model once; `features` then runs
images (B, C, H, W) or a `PackedBatch` to rows (N, D), or to tokens with pool 'none'. With the defaults (last
block, final norm, the model's own pool) a row is the model's pooled feature, `forward_head(..., pre_logits=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import pool_tokens
from ..models.packed_forward import forward_packed_features, pool_packed, prepare
from ..packing import PackedBatch

# pool -> what the model needs for it (None: nothing)
POOLS: dict[str, str | None] = {
    "token": "a class token",
    "avg": None,
    "max": None,
    "avgmax": None,
    "map": "an attention-pool (MAP) head",
    "none": None,
}


def _has(model: nn.Module, pool: str) -> bool:
    if pool == "token":
        return getattr(model, "cls_token", None) is not None
    if pool == "map":
        return getattr(model, "attn_pool", None) is not None
    return True


def model_pool(model: nn.Module) -> str:
    """The pooling the model's own head uses ('none' when it keeps every token)."""
    if getattr(model, "attn_pool", None) is not None:
        return "map"
    return model.global_pool or "none"


@dataclass(frozen=True)
class FeatureSpec:
    """Which features: block `layer` (negative counts from the last, -1 = last), `norm` (the final norm, and
    fc_norm after pooling), `pool` (see `POOLS`), `l2` (each row scaled to unit length)."""

    pool: str
    layer: int = -1
    norm: bool = True
    l2: bool = False

    @classmethod
    def of(cls, model: nn.Module, *, pool: str | None = None, layer: int = -1, norm: bool = True,
           l2: bool = False) -> FeatureSpec:
        """The spec for `model`, `pool` defaulting to the model's own; ValueError names a choice it cannot run."""
        pool = model_pool(model) if pool is None else pool
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
        if not _has(model, pool):
            raise ValueError(f"pool {pool!r} needs {POOLS[pool]}, which this model has not; use --pool avg")
        blocks = len(model.blocks)
        if isinstance(layer, bool) or not isinstance(layer, int) or not -blocks <= layer < blocks:
            raise ValueError(f"--layer {layer} is out of range for a model of {blocks} blocks; use -{blocks}..."
                             f"{blocks - 1} (-1 = the last block)")
        return cls(pool, layer, norm, l2)

    def depth(self, model: nn.Module) -> int:
        """How many blocks to run."""
        return self.layer % len(model.blocks) + 1

    def as_dict(self) -> dict[str, object]:
        return {"pool": self.pool, "layer": self.layer, "norm": self.norm, "l2": self.l2}


def _finish(model: nn.Module, rows: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    if spec.norm and spec.pool != "none":
        rows = model.fc_norm(rows)
    return F.normalize(rows, dim=-1) if spec.l2 else rows


def features(model: nn.Module, x: torch.Tensor | PackedBatch, spec: FeatureSpec) -> torch.Tensor | list[torch.Tensor]:
    """Images (B, C, H, W) -> rows (B, D), or tokens (B, T, D) with pool 'none'. A `PackedBatch` -> rows (I, D)
    in image order, or with pool 'none' a list of each image's tokens (T_i, D). Runs under the caller's grad mode."""
    if isinstance(x, PackedBatch):
        batch = prepare(model, x, token_drop=0.0)
        tokens = forward_packed_features(model, batch, spec.depth(model), spec.norm)  # (S, T, D)
        if spec.pool == "none":
            return [_finish(model, t, spec) for t in batch.unpack(tokens)]
        return _finish(model, pool_packed(model, tokens, batch, spec.pool), spec)
    tokens = model.forward_blocks(model.embed(x), None, spec.depth(model))  # (B, T, D)
    if spec.norm:
        tokens = model.norm(tokens)
    if spec.pool == "none":
        return _finish(model, tokens, spec)
    if spec.pool == "map":
        return _finish(model, model.attn_pool(tokens[:, model.num_prefix_tokens:]), spec)
    return _finish(model, pool_tokens(tokens, spec.pool, model.num_prefix_tokens), spec)
