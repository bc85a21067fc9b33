"""vitkit: Vision Transformers whose attention runs on the fastest exact kernel the machine has.

The public names below are imported on first use, so that `import vitkit` (and the command line's `--help`) does
not load torch until something needs it; `vitkit.NAME` and `from vitkit import NAME` work as for any module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "convert_state_dict": "checkpoints",
    "create_model": "checkpoints",
    "list_pretrained": "checkpoints",
    "load_pretrained": "checkpoints",
    "save_pretrained": "checkpoints",
    "EfficientAttention": "layers",
    "TransformerBlock": "layers",
    "SimpleViT": "models",
    "VisionTransformer": "models",
    "ViTConfig": "models",
    "build_model": "models",
    "list_models": "models",
    "PackedBatch": "packing",
    "pack_images": "packing",
    "embed": "embeddings",
    "load_embeddings": "embeddings",
}

if TYPE_CHECKING:
    from . import attention
    from .checkpoints import convert_state_dict, create_model, list_pretrained, load_pretrained, save_pretrained
    from .embeddings import embed, load_embeddings
    from .layers import EfficientAttention, TransformerBlock
    from .models import SimpleViT, VisionTransformer, ViTConfig, build_model, list_models
    from .packing import PackedBatch, pack_images


def __getattr__(name: str) -> Any:
    """A public name from its submodule, or a submodule (`vitkit.models`), imported now."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value  # the next lookup finds it without this function
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":  # the submodule exists; something it imports does not
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
