"""The transformer block: attention and MLP branches with residuals, pre- or post-norm."""

from __future__ import annotations

import torch
from torch import nn

from ..attention import AttentionChoice, Segments
from .attention import EfficientAttention
from .drop import DropPath, LayerScale
from .mlp import MLP_LAYERS, mlp_layer_name
from .norm import create_norm
from .rope import Rotation


class TransformerBlock(nn.Module):
    """x + attn(norm1(x)), then x + mlp(norm2(x)) with `pre_norm=True` (ViT, timm);
    norm1(x + attn(x)), then norm2(x + mlp(x)) with `pre_norm=False` (the original Transformer).

    Each branch may carry LayerScale (`init_values`) and stochastic depth (`drop_path`). Positional
    arguments keep seed 000's order; layers are names ('gelu', 'layernorm', 'swiglu', ...) or, as in
    the seed, classes (nn.GELU, nn.LayerNorm). `attention_type` / `deterministic` go to its attention layer, as
    its own kernel choice when the block runs on its own; a model passes its choice with each call instead.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: object = "gelu",
        norm_layer: object = "layernorm",
        attention_type: str | None = None,
        deterministic: bool = False,
        pre_norm: bool = True,
        *,
        qk_norm: bool = False,
        proj_bias: bool = True,
        init_values: float | None = None,
        norm_eps: float = 1e-5,
        mlp_layer: object = "mlp",
        head_dim: int | None = None,
        mlp_hidden_dim: int | None = None,
        mlp_bias: bool = True,
        mlp_norm: bool = False,
        key_bias: bool = True,
    ) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.norm1 = create_norm(norm_layer, dim, norm_eps)
        self.attn = EfficientAttention(
            dim, num_heads, attn_drop, drop, attention_type, deterministic, qkv_bias=qkv_bias, qk_norm=qk_norm,
            head_dim=head_dim, proj_bias=proj_bias, norm_layer=norm_layer, norm_eps=norm_eps, key_bias=key_bias,
        )
        self.ls1 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = create_norm(norm_layer, dim, norm_eps)
        self.mlp = MLP_LAYERS[mlp_layer_name(mlp_layer)](
            dim, mlp_hidden_dim or int(dim * mlp_ratio), act_layer=act_layer, bias=mlp_bias, drop=drop,
            norm_layer=(norm_layer, norm_eps) if mlp_norm else None,
        )
        self.ls2 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | Segments | None = None,
                attention: AttentionChoice | None = None, rope: Rotation | None = None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask, attention, rope)))
            return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        x = self.norm1(x + self.drop_path1(self.ls1(self.attn(x, attn_mask, attention, rope))))
        return self.norm2(x + self.drop_path2(self.ls2(self.mlp(x))))
