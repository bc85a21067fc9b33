"""SimpleViT (Beyer et al., "Better plain ViT baselines"; seed 003) on vitkit's pluggable attention.

Patches are normalised, projected and normalised again; positions are fixed 2D sin-cos; blocks are
pre-norm without qkv or output-projection biases; the head mean-pools the tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import TransformerBlock, check_finite, check_images, sincos_2d
from .config import SimpleViTConfig


class PatchProjection(nn.Module):
    """(B, C, H, W) -> (B, h*w, dim): each p1 x p2 x C patch flattened (p1 p2 c order), LN, Linear, LN."""

    def __init__(self, patch_size: tuple[int, int], channels: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        patch_dim = channels * patch_size[0] * patch_size[1]
        self.norm_in = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        p1, p2 = self.patch_size
        x = x.reshape(B, C, H // p1, p1, W // p2, p2).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p1, p2, C)
        x = x.reshape(B, (H // p1) * (W // p2), p1 * p2 * C)
        return self.norm(self.proj(self.norm_in(x)))


class SimpleViT(nn.Module):
    """SimpleViT with seed 003's keyword arguments plus `attention_type`.

    `use_flash=True` runs PyTorch SDPA (fused kernels), `False` the explicit math path; an
    `attention_type` overrides both with any vitkit backend name.
    """

    def __init__(self, config: SimpleViTConfig | None = None, **kwargs) -> None:
        super().__init__()
        config = config or SimpleViTConfig()
        cfg = config.replace(**kwargs) if kwargs else config
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.embed_dim = self.num_features = cfg.dim
        self.num_prefix_tokens = 0
        self.grid_size = (cfg.image_size[0] // cfg.patch_size[0], cfg.image_size[1] // cfg.patch_size[1])
        self.patch_embed = PatchProjection(cfg.patch_size, cfg.channels, cfg.dim)
        self.register_buffer("pos_embed", sincos_2d(*self.grid_size, cfg.dim)[None], persistent=False)
        self.blocks = nn.Sequential(*[
            TransformerBlock(
                cfg.dim,
                num_heads=cfg.heads,
                head_dim=cfg.dim_head,
                mlp_hidden_dim=cfg.mlp_dim,
                qkv_bias=False,
                proj_bias=False,
                norm_layer="layernorm",
                norm_eps=1e-5,
                attention_type=cfg.backend,
            )
            for _ in range(cfg.depth)
        ])
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> tokens (B, h*w, dim), normalised unless `head_norm='pooled'`."""
        check_images(x, self.config.channels, self.patch_embed.proj.weight, chans_arg="channels")
        (H, W), (h, w) = self.config.image_size, x.shape[2:]
        if (h, w) != (H, W):
            raise ValueError(
                f"images must be (batch, {self.config.channels}, {H}, {W}) for image_size {H}x{W}, got {h}x{w}; "
                f"resize the images or build the model with image_size=({h}, {w})"
            )
        if self.config.check_finite:
            check_finite(x)
        x = self.blocks(self.patch_embed(x) + self.pos_embed.to(x.dtype))
        return self.norm(x) if self.config.head_norm == "tokens" else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=1)
        if self.config.head_norm == "pooled":
            x = self.norm(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def no_weight_decay(self) -> set[str]:
        return set()
