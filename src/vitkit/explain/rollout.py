"""Where a ViT looks: per-layer attention weights recorded from the math path during a normal forward, attention
rollout (Abnar & Zuidema, 2020), and the per-patch heat a model's pooling reads.

The forward runs on whatever backend the model is configured with; a pre-hook on each attention layer
recomputes that layer's softmax weights from its own q and k with the math reference (fused kernels never
materialise them), so the map matches the computation exactly, not an approximation of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ..layers import AttentionPoolLatent, EfficientAttention
from ..models import VisionTransformer

METHODS = ("rollout", "last")


@dataclass
class AttentionRecord:
    """Weights seen during one forward: each block's (B, H, T, T) in order, and the MAP head's (B, H, L, N)."""

    blocks: list[torch.Tensor] = field(default_factory=list)
    pool: torch.Tensor | None = None


@contextlib.contextmanager
def record_attention(model: nn.Module) -> Iterator[AttentionRecord]:
    """Record the attention weights of every forward of `model` inside the block (hooks removed on exit)."""
    record = AttentionRecord()

    def on_block(module: EfficientAttention, args: tuple, kwargs: dict) -> None:
        mask = args[1] if len(args) > 1 else kwargs.get("attn_mask")
        rope = args[3] if len(args) > 3 else kwargs.get("rope")  # (x, attn_mask, attention, rope)
        record.blocks.append(module.attention_weights(args[0], mask, rope).detach())

    def on_pool(module: AttentionPoolLatent, args: tuple, kwargs: dict) -> None:
        mask = args[1] if len(args) > 1 else kwargs.get("attn_mask")
        record.pool = module.attention_weights(args[0], mask).detach()

    handles = []
    for module in model.modules():
        if isinstance(module, EfficientAttention):
            handles.append(module.register_forward_pre_hook(on_block, with_kwargs=True))
        elif isinstance(module, AttentionPoolLatent):
            handles.append(module.register_forward_pre_hook(on_pool, with_kwargs=True))
    if not handles:
        raise TypeError(f"{type(model).__name__} has no vitkit attention layers to record")
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def attention_rollout(layers: list[torch.Tensor], *, residual: bool = True) -> torch.Tensor:
    """Rollout of per-layer weights [(B, H, T, T), ...] in forward order -> (B, T, T): row i says how much output
    token i draws from each input token. Heads are averaged; `residual` adds the skip connection as 0.5 A + 0.5 I
    (rows renormalised), as Abnar & Zuidema do."""
    if not layers:
        raise ValueError("attention_rollout needs the weights of at least one layer")
    rollout = None
    for weights in layers:
        attn = weights.float().mean(dim=1)  # (B, H, T, T) -> (B, T, T)
        if residual:
            attn = 0.5 * attn + 0.5 * torch.eye(attn.shape[-1], device=attn.device)
            attn = attn / attn.sum(dim=-1, keepdim=True)
        rollout = attn if rollout is None else attn @ rollout  # later layers apply after earlier ones
    return rollout


def _pool_kind(model: VisionTransformer) -> str:
    """How the model's head reads its tokens: 'token' (row 0), 'map' (latent query), or 'avg' (every patch)."""
    return model.global_pool if model.global_pool in ("token", "map") else "avg"


def patch_heat(model: VisionTransformer, record: AttentionRecord, method: str = "rollout") -> torch.Tensor:
    """(B, num_patches): how much the pooled representation draws from each patch, by `method`.

    rollout: the whole stack's rollout, read the way the head reads tokens — the class token's row; for MAP
    pooling the latent query's weights over the output tokens, carried through the rollout; for average
    (or no) pooling the mean over the patch rows. last: the last layer alone, read the same way (for MAP, the
    latent query's own weights).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not record.blocks:
        raise ValueError("no attention was recorded; run the model inside record_attention(model)")
    prefix = model.num_prefix_tokens
    kind = _pool_kind(model)
    if kind == "map" and record.pool is None:
        raise ValueError("the model pools with MAP but its attention pool did not run; call model(images)")
    tokens = attention_rollout(record.blocks) if method == "rollout" else record.blocks[-1].float().mean(dim=1)
    if kind == "token":
        return tokens[:, 0, prefix:]
    if kind == "map":
        latent = record.pool.float().mean(dim=(1, 2))  # (B, H, L, N) -> (B, N) over the output patch tokens
        if method == "last":
            return latent
        return torch.einsum("bn,bnt->bt", latent, tokens[:, prefix:, :])[:, prefix:]
    return tokens[:, prefix:, prefix:].mean(dim=1)


def patch_grid(model: VisionTransformer, height: int, width: int) -> tuple[int, int]:
    """The (rows, columns) of patches an input of height x width gives this model."""
    return tuple(model.patch_embed.grid_for(height, width))


def normalise(heat: torch.Tensor) -> torch.Tensor:
    """Scale each map of (B, ...) to [0, 1]; a flat map becomes zeros."""
    flat = heat.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = (high - low).clamp_min(torch.finfo(heat.dtype).tiny)
    shape = (-1,) + (1,) * (heat.dim() - 1)
    return ((heat - low.view(shape)) / span.view(shape)).clamp(0.0, 1.0)


@dataclass
class AttentionMaps:
    """Heat per patch, (B, rows, cols) in [0, 1], and the model's output for the same forward."""

    heat: torch.Tensor
    output: torch.Tensor


@torch.no_grad()
def attention_maps(model: VisionTransformer, images: torch.Tensor, *, method: str = "rollout") -> AttentionMaps:
    """Run `model` in eval mode (its mode is restored after) on preprocessed `images` (B, C, H, W) and return
    where it looked, per patch."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if images.dim() != 4:
        raise ValueError(f"images must be (batch, channels, height, width), got shape {tuple(images.shape)}")
    was_training = model.training
    try:
        with record_attention(model.eval()) as record:
            output = model(images)
    finally:
        model.train(was_training)
    rows, cols = patch_grid(model, images.shape[-2], images.shape[-1])
    heat = patch_heat(model, record, method)
    if heat.shape[1] != rows * cols:
        raise ValueError(f"{heat.shape[1]} patch tokens do not fill a {rows}x{cols} grid")
    order = model.token_order(rows, cols)
    if order is not None:  # tokens in merge groups -> raster
        heat = heat[:, torch.argsort(order.to(heat.device))]
    return AttentionMaps(normalise(heat.reshape(-1, rows, cols)), output)
