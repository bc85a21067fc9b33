"""vitkit: Vision Transformers whose attention runs on the fastest exact kernel the machine has."""

from . import attention
from .checkpoints import convert_state_dict, create_model, list_pretrained, load_pretrained, save_pretrained
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


def __getattr__(name: str) -> object:
    """`vitkit.embed` and `vitkit.load_embeddings` load the image pipeline (torchvision) when first used, so that
    `import vitkit` stays light."""
    if name in ("embed", "load_embeddings"):
        from . import embeddings

        return getattr(embeddings, name)
    raise AttributeError(f"module 'vitkit' has no attribute {name!r}")


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
    "embed",
    "list_models",
    "list_pretrained",
    "load_embeddings",
    "load_pretrained",
    "pack_images",
    "save_pretrained",
]
