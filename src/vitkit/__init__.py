"""vitkit: Vision Transformers whose attention runs on the fastest exact kernel the machine has."""

from . import attention
from .checkpoints import convert_state_dict, create_model, load_pretrained, save_pretrained
from .layers import EfficientAttention, TransformerBlock
from .models import (
    SimpleViT,
    VisionTransformer,
    ViTConfig,
    build_model,
    list_models,
)
from .packing import PackedBatch, pack_images

__version__ = "0.1.0"

__all__ = [
    "EfficientAttention",
    "PackedBatch",
    "SimpleViT",
    "TransformerBlock",
    "ViTConfig",
    "VisionTransformer",
    "__version__",
    "attention",
    "build_model",
    "convert_state_dict",
    "create_model",
    "list_models",
    "load_pretrained",
    "pack_images",
    "save_pretrained",
]
