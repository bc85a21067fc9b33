"""SimpleViT (Beyer et al., "Better plain ViT baselines"; seed 003): a VisionTransformer configuration.

Patches are normalised, projected and normalised again; positions are fixed 2D sin-cos; blocks are
pre-norm without qkv or output-projection biases; the head mean-pools the tokens. The model, its
config.json and its state dict are VisionTransformer's.
"""

from __future__ import annotations

from typing import Any

from .config import simple_vit_config
from .vision_transformer import VisionTransformer


class SimpleViT(VisionTransformer):
    """`SimpleViT(image_size, patch_size, num_classes, dim, depth, heads, mlp_dim, channels=3, dim_head=64,
    use_flash=True, *, attention_type=None, head_norm='pooled', **fields)`: seed 003's arguments, mapped by
    `simple_vit_config` onto the VisionTransformer they describe.

    `use_flash=True` runs PyTorch SDPA (fused kernels), `False` the explicit math path; an `attention_type`
    overrides both with any vitkit backend name. By default the LayerNorm follows the mean pooling, as in seed 003;
    `head_norm='tokens'` normalises the tokens before it, as vit-pytorch's `SimpleViT`. `fields`: other ViTConfig
    fields (check_finite, dynamic_img_size, drop_path_rate, ...).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(simple_vit_config(*args, **kwargs))
