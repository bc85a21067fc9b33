"""Looking at where a ViT looks: attention weights recorded from the math path, attention rollout, and heatmaps
over the input image."""

from .overlay import AttentionMapResult, attention_map, fit, overlay, save_png, side_by_side
from .rollout import (
    METHODS,
    AttentionMaps,
    AttentionRecord,
    attention_maps,
    attention_rollout,
    patch_grid,
    patch_heat,
    record_attention,
)

__all__ = [
    "METHODS",
    "AttentionMapResult",
    "AttentionMaps",
    "AttentionRecord",
    "attention_map",
    "attention_maps",
    "attention_rollout",
    "fit",
    "overlay",
    "patch_grid",
    "patch_heat",
    "record_attention",
    "save_png",
    "side_by_side",
]
