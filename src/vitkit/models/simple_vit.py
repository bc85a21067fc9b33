"""SimpleViT (Beyer et al., "Better plain ViT baselines"; seed 003): a VisionTransformer configuration.

Patches are normalised, projected and normalised again; positions are fixed 2D sin-cos; blocks are
pre-norm without qkv or output-projection biases; the head mean-pools the tokens. The model, its
config.json and its state dict are VisionTransformer's.
"""

from __future__ import annotations

from typing import Any

from .config import simple_vit_backend, simple_vit_config
from .vision_transformer import VisionTransformer


class SimpleViT(VisionTransformer):
    """Seed 003's arguments, mapped by `simple_vit_config` onto the VisionTransformer they describe.

    `use_flash=True` runs PyTorch SDPA (fused kernels), `False` the explicit math path; an `attention_type`
    overrides both with any vitkit backend name (the model's kernel choice, as `set_attention` sets it). By default
    the LayerNorm follows the mean pooling, as in seed 003; `head_norm='tokens'` normalises the tokens before it, as
    vit-pytorch's `SimpleViT`. `fields`: other ViTConfig fields (check_finite, dynamic_img_size, drop_path_rate,
    ...), and `deterministic`.
    """

    def __init__(self, image_size: int | tuple[int, int], patch_size: int | tuple[int, int], num_classes: int,
                 dim: int, depth: int, heads: int, mlp_dim: int, channels: int = 3, dim_head: int = 64,
                 use_flash: bool = True, *, attention_type: str | None = None, deterministic: bool = False,
                 head_norm: str = "pooled", **fields: Any) -> None:
        config = simple_vit_config(image_size, patch_size, num_classes, dim, depth, heads, mlp_dim, channels,
                                   dim_head, head_norm=head_norm, **fields)
        super().__init__(config, attention_type=simple_vit_backend(use_flash, attention_type),
                         deterministic=deterministic)
