"""Building blocks of vision transformers, with timm's state-dict names."""

from ..choices import FEATURE_POOLS
from .activations import ACTIVATIONS, QuickGELU, activation_name, create_activation
from .attention import EfficientAttention
from .block import TransformerBlock
from .drop import DropPath, LayerScale
from .merge import PatchMerger
from .mlp import MLP_LAYERS, Mlp, SwiGLU, SwiGLUPacked, mlp_layer_name
from .norm import NORMS, create_norm, norm_name
from .patch_embed import NormLinearPatchEmbed, PatchEmbed, check_finite, check_images, to_2tuple
from .pool import POOL_TYPES, AttentionPoolLatent, pool_segments, pool_tokens
from .pos_embed import resample_abs_pos_embed, sincos_2d
from .rope import ROPE_NAMES, ROPES, BlockRotations, RopeVariant, RotaryEmbedding2D, Rotation

__all__ = [
    "ACTIVATIONS",
    "FEATURE_POOLS",
    "MLP_LAYERS",
    "NORMS",
    "POOL_TYPES",
    "ROPES",
    "ROPE_NAMES",
    "AttentionPoolLatent",
    "BlockRotations",
    "DropPath",
    "EfficientAttention",
    "LayerScale",
    "Mlp",
    "NormLinearPatchEmbed",
    "PatchEmbed",
    "PatchMerger",
    "QuickGELU",
    "RopeVariant",
    "RotaryEmbedding2D",
    "Rotation",
    "SwiGLU",
    "SwiGLUPacked",
    "TransformerBlock",
    "activation_name",
    "check_finite",
    "check_images",
    "create_activation",
    "create_norm",
    "mlp_layer_name",
    "norm_name",
    "pool_segments",
    "pool_tokens",
    "resample_abs_pos_embed",
    "sincos_2d",
    "to_2tuple",
]
