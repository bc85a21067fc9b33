"""Models, their configs, and the registry of named configurations."""

from .config import (
    HALF_MEAN,
    HALF_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPOLATIONS,
    ViTConfig,
    config_from_dict,
    parse_overrides,
    saved_attention,
    simple_vit_backend,
    simple_vit_config,
)
from .registry import (
    CLIP_MEAN,
    CLIP_STD,
    NAFLEX,
    QWEN2_5_VL,
    QWEN3_VL,
    ModelInfo,
    attention_argument,
    build_model,
    create_model,
    get_config,
    list_models,
    model_info,
)
from .simple_vit import SimpleViT
from .tower import VisionTokens
from .vision_transformer import VisionTransformer

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "HALF_MEAN",
    "HALF_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTERPOLATIONS",
    "NAFLEX",
    "QWEN2_5_VL",
    "QWEN3_VL",
    "ModelInfo",
    "SimpleViT",
    "ViTConfig",
    "VisionTokens",
    "VisionTransformer",
    "attention_argument",
    "build_model",
    "config_from_dict",
    "create_model",
    "get_config",
    "list_models",
    "model_info",
    "parse_overrides",
    "saved_attention",
    "simple_vit_backend",
    "simple_vit_config",
]
