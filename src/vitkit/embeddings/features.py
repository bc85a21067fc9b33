"""A tower's features as rows: one block's tokens, with or without the final norm, pooled one way.

`FeatureSpec.of(model, pool=..., layer=...)` checks the choice against the model once; `features` then runs
images (B, C, H, W) or a `PackedBatch` to rows (N, D), or to tokens with pool 'none'. With the defaults (last
block, final norm, the model's own pool) a row is the model's pooled feature, `forward_head(..., pre_logits=True)`.
Everything here is the model's public `forward_features` and `pool`; this room only adds fc_norm and l2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import FEATURE_POOLS
from ..packing import PackedBatch

POOLS = FEATURE_POOLS


@dataclass(frozen=True)
class FeatureSpec:
    """Which features: block `layer` (negative counts from the last, -1 = last), `norm` (the final norm, and
    fc_norm after pooling), `pool` (one of `POOLS`), `l2` (each row scaled to unit length)."""

    pool: str
    layer: int = -1
    norm: bool = True
    l2: bool = False

    @classmethod
    def of(cls, model: nn.Module, *, pool: str | None = None, layer: int = -1, norm: bool = True,
           l2: bool = False) -> FeatureSpec:
        """The spec for `model`, `pool` defaulting to the model's own; ValueError names a choice it cannot run."""
        try:
            model.blocks_to_run(layer)
        except ValueError:
            n = len(model.blocks)
            raise ValueError(f"--layer {layer} is out of range for a model of {n} blocks; use -{n}...{n - 1} "
                             "(-1 = the last block)") from None
        return cls(model.resolve_pool(pool), layer, norm, l2)

    def as_dict(self) -> dict[str, object]:
        return {"pool": self.pool, "layer": self.layer, "norm": self.norm, "l2": self.l2}


def _finish(model: nn.Module, rows: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    if spec.norm and spec.pool != "none":
        rows = model.fc_norm(rows)
    return F.normalize(rows, dim=-1) if spec.l2 else rows


def features(model: nn.Module, x: torch.Tensor | PackedBatch, spec: FeatureSpec) -> torch.Tensor | list[torch.Tensor]:
    """Images (B, C, H, W) -> rows (B, D), or tokens (B, T, D) with pool 'none'. A `PackedBatch` (packed for the
    model) -> rows (I, D) in image order, or with pool 'none' a list of each image's tokens (T_i, D). Runs under
    the caller's grad mode."""
    tokens = model.forward_features(x, layer=spec.layer, norm=spec.norm)
    rows = model.pool(tokens, spec.pool, batch=x if isinstance(x, PackedBatch) else None)
    if isinstance(rows, list):
        return [_finish(model, t, spec) for t in rows]
    return _finish(model, rows, spec)
