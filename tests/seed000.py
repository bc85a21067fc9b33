"""Seed 000 (`shared/seeds/000_*.txt`, the modular DeepSeek-VL2 SigLIP ViT), re-implemented as the reference
for vitkit's seed-style construction.

Faithful to the seed: timm's PatchEmbed, Mlp, DropPath and checkpoint_seq as it imports them; its math attention;
its defaults (`nn.LayerNorm`, eps 1e-5; exact `nn.GELU`); its post-norm block; its head on every token when
`global_pool=''`; and its quirk that `qkv_bias` is accepted but never used (qkv always has a bias, which its init
sets to zero). Only its crashes are fixed: `Mlp` is imported and `num_recomputing_layers` is stored. The flash and
xformers branches (CUDA only, and wrong in the seed) are left out: the reference is the math path.
"""

from __future__ import annotations

from typing import Literal

import torch
from timm.layers import DropPath, Mlp, PatchEmbed
from timm.models._manipulate import checkpoint_seq
from torch import nn


class EfficientAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int = 8, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 attention_type: str = "scaled_dot_product", deterministic: bool = False) -> None:
        super().__init__()
        assert dim % num_heads == 0
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attention_type = attention_type
        self.deterministic = deterministic
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.attention_type != "scaled_dot_product":
            raise ValueError(f"the reference runs the seed's math path only, not {self.attention_type!r}")
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, act_layer: type[nn.Module] = nn.GELU,
                 norm_layer: type[nn.Module] = nn.LayerNorm, attention_type: str = "scaled_dot_product",
                 deterministic: bool = False, pre_norm: bool = True) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = EfficientAttention(dim, num_heads=num_heads, attn_drop=attn_drop, proj_drop=drop,
                                       attention_type=attention_type, deterministic=deterministic)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop_path(self.attn(self.norm1(x)))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop_path(self.attn(x)))
        return self.norm2(x + self.drop_path(self.mlp(x)))


class VisionTransformer(nn.Module):
    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, weight_init: str = "", embed_layer: type[nn.Module] = PatchEmbed,
                 norm_layer: type[nn.Module] = nn.LayerNorm, act_layer: type[nn.Module] = nn.GELU,
                 attention_type: str = "scaled_dot_product", deterministic: bool = False, pre_norm: bool = True,
                 num_recomputing_layers: int = 0, global_pool: Literal["", "token"] = "token") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.global_pool = global_pool
        self.num_recomputing_layers = num_recomputing_layers  # the seed forgets this line
        self.patch_embed = embed_layer(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                       embed_dim=embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, embed_dim) * 0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.Sequential(*[
            TransformerBlock(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                             drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i], act_layer=act_layer,
                             norm_layer=norm_layer, attention_type=attention_type, deterministic=deterministic,
                             pre_norm=pre_norm)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if weight_init != "skip":
            self.init_weights()

    def init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = self.pos_drop(x + self.pos_embed)
        if self.num_recomputing_layers > 0 and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x, skip_last=0)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        if self.global_pool == "token":
            x = x[:, 0]
        return self.head(x)
