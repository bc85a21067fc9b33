"""Turning token sequences into one vector per image: token, avg, max, and MAP attention pooling."""

from __future__ import annotations

import torch
from torch import nn

from ..attention import AttentionChoice, Segments, attention_weights
from .attention import StandaloneChoice
from .mlp import Mlp
from .norm import create_norm

POOL_TYPES = ("", "token", "avg", "max", "avgmax", "map")  # a model's `global_pool` ('': its head takes tokens)


def pool_tokens(x: torch.Tensor, pool_type: str, num_prefix_tokens: int) -> torch.Tensor:
    """(B, T, D) -> (B, D) by the class token or over patch tokens; '' keeps (B, T, D)."""
    if pool_type == "token":
        return x[:, 0]
    if pool_type in ("avg", "max", "avgmax"):
        x = x[:, num_prefix_tokens:]
        if pool_type == "avg":
            return x.mean(dim=1)
        if pool_type == "max":
            return x.amax(dim=1)
        return 0.5 * (x.amax(dim=1) + x.mean(dim=1))
    return x


def pool_segments(patches: torch.Tensor, image: torch.Tensor, num_images: int, pool_type: str) -> torch.Tensor:
    """`pool_tokens` over packed patch tokens: (P, D) patches, each tagged with its image (P,) -> (num_images, D),
    row i pooled over image i's patches alone ('avg', 'max', 'avgmax')."""
    if pool_type not in ("avg", "max", "avgmax"):
        raise ValueError(f"pool_segments pools 'avg', 'max' or 'avgmax' over patches, not {pool_type!r}")
    D = patches.shape[-1]
    counts = torch.bincount(image, minlength=num_images).clamp(min=1).to(patches.dtype)
    mean = patches.new_zeros(num_images, D).index_add(0, image, patches) / counts[:, None]
    if pool_type == "avg":
        return mean
    most = patches.new_full((num_images, D), float("-inf")).scatter_reduce(
        0, image[:, None].expand_as(patches), patches, reduce="amax", include_self=True
    )
    return most if pool_type == "max" else 0.5 * (most + mean)


class AttentionPoolLatent(StandaloneChoice, nn.Module):
    """Multihead attention pooling (MAP): a learned latent query attends over the tokens, then an MLP.

    SigLIP's head; names follow timm (latent, q, kv, proj, norm, mlp.fc1/fc2). Its kernel is the caller's choice
    (`attention`), or its own `attention_type` when used on its own (`StandaloneChoice`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        latent_len: int = 1,
        act_layer: str = "gelu",
        norm_layer: str = "layernorm",
        norm_eps: float = 1e-5,
        attention_type: str | None = None,
        drop: float = 0.0,
        deterministic: bool = False,
        mlp_hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads}) for MAP pooling")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.latent_len = latent_len
        self._keep_choice(attention_type, deterministic)
        self.latent = nn.Parameter(torch.zeros(1, latent_len, dim))
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        self.norm = create_norm(norm_layer, dim, norm_eps)
        self.mlp = Mlp(dim, mlp_hidden_dim or int(dim * mlp_ratio), act_layer=act_layer)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (B, N, C) -> the latent queries (B, H, L, D) and the tokens' keys and values, each (B, H, N, D)."""
        B, N, _ = x.shape
        q = self.q(self.latent.expand(B, -1, -1))
        q = q.reshape(B, self.latent_len, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, D)
        kv = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # each (B, H, N, D)
        return q, k, v

    def attention_weights(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """How much each latent query draws from each token, (B, H, L, N), from the math path."""
        q, k, _ = self._qkv(x)
        return attention_weights(q, k, attn_mask)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                attention: AttentionChoice | None = None) -> torch.Tensor:
        B, _, C = x.shape
        q, k, v = self._qkv(x)
        x = self.choice(attention).attend(q, k, v, attn_mask)
        x = x.transpose(1, 2).reshape(B, self.latent_len, C)  # (B, H, L, D) -> (B, L, C)
        return self._finish(x)

    def forward_segments(self, x: torch.Tensor, kv_ids: torch.Tensor, order: torch.Tensor,
                         attention: AttentionChoice | None = None) -> torch.Tensor:
        """Packed tokens (S, T, C) -> one pooled vector per segment (I, C) (or (I, L, C)), segment id order.

        `kv_ids` (S, T) gives each slot's segment (-1: not pooled, e.g. prefix tokens and padding);
        `order` (I,) lists the segment ids in the order their slots appear. Each segment's latent
        queries attend only to that segment's tokens, on the model's varlen attention kernel.
        """
        S, T, C = x.shape
        num = order.numel()
        q = self.q(self.latent).reshape(1, self.latent_len, self.num_heads, self.head_dim)
        q = q.expand(num, -1, -1, -1).reshape(1, num * self.latent_len, self.num_heads, self.head_dim)
        q = q.transpose(1, 2)  # (1, H, I*L, D)
        kv = self.kv(x).reshape(1, S * T, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # each (1, H, S*T, D)
        segments = Segments(order.repeat_interleave(self.latent_len)[None], kv_ids.reshape(1, S * T))
        x = self.choice(attention).attend(q, k, v, segments)
        x = x.transpose(1, 2).reshape(num, self.latent_len, C)  # (1, H, I*L, D) -> (I, L, C), `order` order
        x = x[torch.argsort(order)]  # -> segment id order
        return self._finish(x)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """Projection and MLP after the attention; (B, L, C) -> (B, C) for a single latent."""
        x = self.proj_drop(self.proj(x))
        x = x + self.mlp(self.norm(x))
        return x[:, 0] if self.latent_len == 1 else x
