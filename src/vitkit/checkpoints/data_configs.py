"""How each family's published weights expect their images (mean, std, crop_pct, interpolation), for the converters
to fill in what a checkpoint's own files do not state, and to say so in the conversion's `assumed` report."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..models import (
    CLIP_MEAN,
    CLIP_STD,
    HALF_MEAN,
    HALF_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NAFLEX,
    ViTConfig,
    get_config,
    list_models,
)

DATA_FIELDS = ("mean", "std", "crop_pct", "interpolation")


@dataclass(frozen=True)
class DataConfig:
    """A family's data config and where it is published (`source`, quoted in the assumed report)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    interpolation: str
    source: str

    def fill(self, hints: dict[str, Any], assumed: dict[str, str]) -> None:
        """Each data-config field `hints` lacks (the checkpoint's files did not state it): this family's value, and
        a line in `assumed` saying so. Fields `hints` has were read from those files and are left alone."""
        for name in DATA_FIELDS:
            if name not in hints:
                hints[name] = getattr(self, name)
                assumed[name] = f"{hints[name]!r} ({self.source}; not in the checkpoint or its JSON files)"


_VITKIT = {f.name: f.default for f in fields(ViTConfig) if f.name in DATA_FIELDS}

# Family -> its published data config. crop_pct 1.0 where the image is resized straight to the model's size or its
# shorter side to it before a centre crop of that size (HF processors without a crop, CLIP, big_vision, Qwen).
FAMILIES: dict[str, DataConfig] = {
    "augreg": DataConfig(HALF_MEAN, HALF_STD, 0.9, "bicubic", "timm's VisionTransformer pretrained_cfg (AugReg)"),
    "timm_eva02": DataConfig(CLIP_MEAN, CLIP_STD, 0.9, "bicubic", "timm's eva02_* pretrained_cfg"),
    "timm_dinov3": DataConfig(IMAGENET_MEAN, IMAGENET_STD, 1.0, "bicubic", "timm's vit_*_dinov3 pretrained_cfg"),
    "timm_rope_mixed": DataConfig(IMAGENET_MEAN, IMAGENET_STD, 0.9, "bicubic",
                                  "timm's vit_*_rope_mixed_* pretrained_cfg"),
    "naflex": DataConfig(HALF_MEAN, HALF_STD, NAFLEX["crop_pct"], NAFLEX["interpolation"],
                         "SigLIP2's NaFlex processor: never crops"),
    "deepseek_vl2": DataConfig(HALF_MEAN, HALF_STD, 1.0, "bicubic", "DeepSeek-VL2's processor: pads, never crops"),
    "open_clip": DataConfig(CLIP_MEAN, CLIP_STD, 1.0, "bicubic", "OpenCLIP's PreprocessCfg defaults (OpenAI CLIP's)"),
    "hf_clip": DataConfig(CLIP_MEAN, CLIP_STD, 1.0, "bicubic", "HF CLIPImageProcessor: shorter side, centre crop"),
    "hf_vit": DataConfig(HALF_MEAN, HALF_STD, 1.0, "bilinear", "HF ViTImageProcessor: resized straight to size"),
    "hf_siglip": DataConfig(HALF_MEAN, HALF_STD, 1.0, "bicubic", "HF SiglipImageProcessor: resized straight to size"),
    "dinov2": DataConfig(IMAGENET_MEAN, IMAGENET_STD, 224 / 256, "bicubic",
                         "DINOv2's published value: its eval transform and HF processor resize to 256, crop 224"),
    "dinov3": DataConfig(IMAGENET_MEAN, IMAGENET_STD, 1.0, "bilinear",
                         "DINOv3's published value: its transform and HF processor resize straight to size"),
    "qwen2_5_vl": DataConfig(CLIP_MEAN, CLIP_STD, 1.0, "bicubic", "Qwen2.5-VL's processor: never crops"),
    "qwen3_vl": DataConfig(HALF_MEAN, HALF_STD, 1.0, "bicubic", "Qwen3-VL's processor: never crops"),
    "big_vision": DataConfig(HALF_MEAN, HALF_STD, 1.0, "bilinear",
                             "big_vision's resize(size)|value_range(-1, 1): inputs in [-1, 1], no crop"),
    "vit_pytorch": DataConfig(**_VITKIT, source="vitkit's default: vit-pytorch publishes no preprocessing"),
}


def registered_data(name: str) -> DataConfig | None:
    """The data config vitkit registers for the model `name` (a timm architecture: timm's pretrained_cfg for it), or
    None when vitkit registers no such model."""
    if name not in list_models():
        return None
    config = get_config(name)
    return DataConfig(*(getattr(config, f) for f in DATA_FIELDS), source=f"timm's pretrained_cfg for {name}")
