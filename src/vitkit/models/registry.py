"""Named model configs and the factory: `create_model(name, **overrides)`, `list_models(pattern)`."""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .config import IMAGENET_MEAN, IMAGENET_STD, ViTConfig, config_from_dict, simple_vit_config
from .vision_transformer import VisionTransformer

# timm builds its ViTs with LayerNorm eps 1e-6 and exact GELU (seed 000's defaults are eps 1e-5, exact GELU).
# Their images are prepared as timm's pretrained_cfg says: centre crop 0.9, bicubic.
_TIMM = dict(norm_eps=1e-6, act_layer="gelu", crop_pct=0.9)
# timm's SigLIP ports (`vit_*_siglip_*`): no class token, MAP head, no classifier, and timm's exact GELU. vLLM and
# SGLang run DeepSeek-VL2's tower as timm's `vit_so400m_patch14_siglip_384`, so these are its numbers too.
# Google's big_vision and HF transformers run GELU-tanh; their loaders keep it (`act_layer="gelu_tanh"` here).
_SIGLIP = dict(_TIMM, class_token=False, global_pool="map", num_classes=0)
# SigLIP2 NaFlex: any grid, the learned 16 x 16 table resized to it by antialiased bilinear interpolation; images
# keep their aspect ratio under a patch budget (SigLIP2's processor: 256 patches), resized bilinearly, never cropped.
NAFLEX = dict(dynamic_img_size=True, pos_embed_interpolation="bilinear", pos_embed_antialias=True,
              interpolation="bilinear", crop_pct=1.0)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# DINOv3 = timm's `vit_*_patch16_dinov3` (eva.py): a class and 4 register ("storage") tokens, no position table but
# DINOv3's 2D RoPE (theta 100), LayerScale 1e-5, LayerNorm eps 1e-5, 256 px; timm averages the patch tokens after
# the final norm (DINOv3 itself reads the class token: pass global_pool='token'). `_qkvb` weights have q and v
# biases, the key bias held at zero; the others none. The "plus" and 7B towers use SwiGLU (SiLU) MLPs.
_DINOV3 = dict(
    img_size=256, patch_size=16, dynamic_img_size=True, reg_tokens=4, pos_embed="none", rope="dinov3",
    rope_theta=100.0, init_values=1e-5, qkv_bias=False, global_pool="avg", fc_norm=False, norm_eps=1e-5,
    num_classes=0, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=1.0,
)
_SWIGLU = dict(mlp_layer="swiglu", act_layer="silu")
_DINOV3_SIZES = {  # size: (width, depth, heads, MLP settings)
    "tiny": (192, 12, 3, {}), "small": (384, 12, 6, {}), "small_plus": (384, 12, 6, _SWIGLU),
    "base": (768, 12, 12, {}), "large": (1024, 24, 16, {}), "huge_plus": (1280, 32, 20, _SWIGLU),
    "7b": (4096, 40, 32, dict(_SWIGLU, mlp_ratio=2.0)),
}
_DINOV3_NAMES = {
    f"vit_{size}_patch16_dinov3{suffix}": ViTConfig(
        embed_dim=dim, depth=depth, num_heads=heads, **{**_DINOV3, **mlp, **bias})
    for size, (dim, depth, heads, mlp) in _DINOV3_SIZES.items()
    for suffix, bias in (("", {}), ("_qkvb", dict(qkv_bias=True, key_bias=False)))
    if (size, suffix) not in (("tiny", ""), ("7b", "_qkvb"))  # as timm: tiny with biases only, 7B without
}
# EVA-02 = timm's `eva02_*_patch14_224` (MIM-pretrained, no classifier): a learned table and EVA-02's RoPE on the
# cell grid rescaled to 16 x 16, q and v biases (key bias zero), SwiGLU (SiLU) MLPs 4 x 2/3 wide, packed in one fc1
# for tiny / small, split with a LayerNorm before fc2 (sub-LN) for base / large; avg pool + fc_norm; OpenAI CLIP's
# mean / std.
_EVA02 = dict(
    patch_size=14, rope="eva02", rope_grid=(16, 16), key_bias=False, mlp_ratio=4 * 2 / 3, act_layer="silu",
    global_pool="avg", num_classes=0, norm_eps=1e-6, mean=CLIP_MEAN, std=CLIP_STD, crop_pct=0.9,
)
_EVA02_NAMES = {
    f"eva02_{size}_patch14_224": ViTConfig(
        embed_dim=dim, depth=depth, num_heads=heads, **_EVA02,
        **(dict(mlp_layer="swiglu", mlp_norm=True) if split else
           dict(mlp_layer="swiglu_packed", mlp_hidden_dim=2 * int(dim * _EVA02["mlp_ratio"]))))
    for size, (dim, depth, heads, split) in {
        "tiny": (192, 12, 3, False), "small": (384, 12, 6, False), "base": (768, 12, 12, True),
        "large": (1024, 24, 16, True)}.items()
}
# RoPE-Mixed ViTs (Heo et al. 2024) = timm's `vit_*_patch16_rope_mixed_224`: learned 2D frequencies per block and
# head (theta 10, x before y), no position table, LayerScale 1e-5, class-token pool, ImageNet classifier.
_ROPE_MIXED_NAMES = {
    f"vit_{size}_patch16_rope_mixed_224": ViTConfig(
        embed_dim=dim, depth=depth, num_heads=heads, pos_embed="none", rope="mixed", rope_theta=10.0,
        rope_indexing="xy", init_values=1e-5, mean=IMAGENET_MEAN, std=IMAGENET_STD, **_TIMM)
    for size, (dim, depth, heads) in {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}.items()
}
# DINOv2 = timm's `vit_*_patch14[_reg4]_dinov2` (DINOv2's own towers, 518 px): LayerScale 1e-5, class-token pool, no
# classifier, ImageNet mean / std, whole image (crop 1.0); the register variants add 4 tokens outside the table.
_DINOV2_NAMES = {
    f"vit_{size}_patch14{'_reg4' if reg else ''}_dinov2": ViTConfig(
        img_size=518, patch_size=14, embed_dim=dim, depth=depth, num_heads=heads, init_values=1e-5, num_classes=0,
        reg_tokens=4 if reg else 0, no_embed_class=reg, **{**_TIMM, "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
                                                          "crop_pct": 1.0})
    for size, (dim, depth, heads) in {"small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}.items()
    for reg in (False, True)
}
# The vision towers of Qwen2.5-VL and Qwen3-VL (transformers' Qwen2_5_VisionTransformerPretrainedModel and
# Qwen3VLVisionModel): patches of 2 frames (a still image twice), Qwen's axial RoPE, no class token, no final norm,
# 2 x 2 patch merger to the language model's width; images sized by Qwen's `smart_resize` (sides multiples of 28 / 32,
# pixels between min_pixels and max_pixels), bicubic, never cropped. `img_size` is only a default for dense batches.
_QWEN_VL = dict(temporal_patch_size=2, class_token=False, rope="qwen", final_norm=False, global_pool="avg",
                fc_norm=False, num_classes=0, merge_size=2, dynamic_img_size=True, norm_eps=1e-6, crop_pct=1.0,
                interpolation="bicubic")
# Qwen2.5-VL: RMSNorm, SwiGLU with biases, no position table, 8 x 8-patch (112 px) windows but in every 8th block;
# OpenAI CLIP's mean / std.
QWEN2_5_VL = dict(_QWEN_VL, patch_size=14, img_size=448, pos_embed="none", norm_layer="rmsnorm", mlp_layer="swiglu",
                  act_layer="silu", patch_bias=False, mean=CLIP_MEAN, std=CLIP_STD)
# Qwen3-VL: LayerNorm, GELU-tanh MLP, a learned 48 x 48 table resized bilinearly with corners aligned; mean / std 0.5.
QWEN3_VL = dict(_QWEN_VL, patch_size=16, img_size=768, pos_embed_interpolation="bilinear", pos_embed_antialias=False,
                pos_embed_align_corners=True, act_layer="gelu_tanh")
# Released towers: Qwen/Qwen2.5-VL-{3B,7B,32B,72B}-Instruct and Qwen/Qwen3-VL-* config.json, preprocessor_config.json.
_QWEN2_5_NAMES = {
    f"qwen2_5_vl_vision_{size}": ViTConfig(
        embed_dim=1280, depth=32, num_heads=16, mlp_hidden_dim=mlp, merge_dim=out, window_size=8,
        full_attention_blocks=(7, 15, 23, 31), min_pixels=56 * 56, max_pixels=28 * 28 * 16384, **QWEN2_5_VL)
    for size, (mlp, out) in {"3b": (3420, 2048), "7b": (3420, 3584), "32b": (3456, 5120),
                             "72b": (3456, 8192)}.items()
}
_QWEN3_NAMES = {
    f"qwen3_vl_vision_{size}": ViTConfig(
        embed_dim=dim, depth=depth, num_heads=16, mlp_hidden_dim=mlp, merge_dim=out, deepstack=stack,
        min_pixels=65536, max_pixels=16777216, **QWEN3_VL)
    for size, (dim, depth, mlp, out, stack) in {
        "2b": (1024, 24, 4096, 2048, (5, 11, 17)), "4b": (1024, 24, 4096, 2560, (5, 11, 17)),
        "8b": (1152, 27, 4304, 4096, (8, 16, 24)), "32b": (1152, 27, 4304, 5120, (8, 16, 24)),
        "30b_a3b": (1152, 27, 4304, 2048, (8, 16, 24)), "235b_a22b": (1152, 27, 4304, 4096, (8, 16, 24))}.items()
}

_CONFIGS: dict[str, ViTConfig] = {
    # timm / AugReg ViTs (ImageNet-21k -> 1k), the timm models of the same name; mean/std 0.5 as their weights expect.
    "vit_tiny_patch16_224": ViTConfig(embed_dim=192, depth=12, num_heads=3, **_TIMM),
    "vit_small_patch16_224": ViTConfig(embed_dim=384, depth=12, num_heads=6, **_TIMM),
    "vit_base_patch16_224": ViTConfig(embed_dim=768, depth=12, num_heads=12, **_TIMM),
    "vit_base_patch32_224": ViTConfig(patch_size=32, embed_dim=768, depth=12, num_heads=12, **_TIMM),
    "vit_large_patch16_224": ViTConfig(embed_dim=1024, depth=24, num_heads=16, **_TIMM),
    # timm's ViT-H/14 is the original ImageNet-21k tower, without a classifier.
    "vit_huge_patch14_224": ViTConfig(patch_size=14, embed_dim=1280, depth=32, num_heads=16, num_classes=0, **_TIMM),
    # SigLIP vision towers = timm's vit_base_patch16_siglip_224, vit_large_patch16_siglip_384,
    # vit_so400m_patch14_siglip_224 and vit_so400m_patch14_siglip_384 (DeepSeek-VL2's names).
    "siglip_base_patch16_224": ViTConfig(embed_dim=768, depth=12, num_heads=12, **_SIGLIP),
    "siglip_large_patch16_384": ViTConfig(img_size=384, embed_dim=1024, depth=24, num_heads=16, **_SIGLIP),
    "siglip_so400m_patch14_224": ViTConfig(
        patch_size=14, embed_dim=1152, depth=27, num_heads=16, mlp_ratio=3.7362, **_SIGLIP
    ),
    "siglip_so400m_patch14_384": ViTConfig(  # 384 px / 14 px patches: 27 x 27 tokens, the remainder cropped
        img_size=384, patch_size=14, embed_dim=1152, depth=27, num_heads=16, mlp_ratio=3.7362,
        crop_remainder=True, **_SIGLIP
    ),
    # SigLIP2 NaFlex towers = HF's google/siglip2-{base,so400m}-patch16-naflex vision models: GELU-tanh as HF runs
    # them, a 16 x 16 table, MAP head, a budget of 256 patches.
    "siglip2_base_patch16_naflex": ViTConfig(
        img_size=256, embed_dim=768, depth=12, num_heads=12, max_patches=256,
        **{**_SIGLIP, **NAFLEX, "act_layer": "gelu_tanh"}),
    "siglip2_so400m_patch16_naflex": ViTConfig(
        img_size=256, embed_dim=1152, depth=27, num_heads=16, mlp_hidden_dim=4304, max_patches=256,
        **{**_SIGLIP, **NAFLEX, "act_layer": "gelu_tanh"}),
    # SimpleViT (Beyer et al. 2022), the seed 003 family: vit-pytorch's SimpleViT with these arguments (its final
    # LayerNorm on the tokens, before the mean; seed 003 normalises the mean).
    "simple_vit_small_patch16_224": simple_vit_config(224, 16, 1000, dim=384, depth=12, heads=6, mlp_dim=1536,
                                                      head_norm="tokens"),
    "simple_vit_base_patch16_224": simple_vit_config(224, 16, 1000, dim=768, depth=12, heads=12, mlp_dim=3072,
                                                     head_norm="tokens"),
    # A small ViT for scikit-learn's 8x8 digits (1 channel, 2x2 patches -> 16 tokens). Fixed sin-cos
    # positions: with 1,437 training images a learned table (init std 0.02) leaves it a bag of patches.
    "vit_digits": ViTConfig(
        img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4,
        mlp_ratio=2.0, global_pool="avg", class_token=False, pos_embed="sincos", norm_eps=1e-6,
        mean=(0.5,), std=(0.5,), crop_pct=1.0,
    ),
    **_DINOV3_NAMES,
    **_EVA02_NAMES,
    **_ROPE_MIXED_NAMES,
    **_DINOV2_NAMES,
    **_QWEN2_5_NAMES,
    **_QWEN3_NAMES,
}


@dataclass(frozen=True)
class ModelInfo:
    """A registered model at a glance, for `vitkit models`."""

    name: str
    params: int
    img_size: tuple[int, int]
    global_pool: str


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a shell-style pattern (e.g. 'siglip*')."""
    names = sorted(_CONFIGS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_config(name: str) -> ViTConfig:
    """The registered config of `name`; ValueError listing close names when unknown."""
    if not isinstance(name, str) or name not in _CONFIGS:
        close = [n for n in _CONFIGS if str(name).split("_")[0] in n][:6] or list_models()[:6]
        raise ValueError(f"unknown model {name!r}; registered models include: {', '.join(close)} "
                         "(see `vitkit models`)")
    return _CONFIGS[name]


def build_model(config: ViTConfig | dict[str, Any]) -> VisionTransformer:
    """The model a config describes (a config object or its config.json dict)."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    if not isinstance(config, ViTConfig):
        raise TypeError(f"build_model takes a ViTConfig or a config dict, got {type(config).__name__}; for a "
                        "registered name use create_model(name)")
    return VisionTransformer(config)


def attention_argument(attention: str | None, overrides: dict[str, Any]) -> str | None:
    """`attention=`, or the `attention_type=` override that named it before the kernel left the config (removed
    from `overrides`; deprecated)."""
    if "attention_type" in overrides:
        warnings.warn("attention_type= is deprecated here: the kernel is not a config field; pass attention=",
                      DeprecationWarning, stacklevel=3)
        legacy = overrides.pop("attention_type")
        attention = legacy if attention is None else attention
    return attention


def create_model(name: str, *, attention: str | None = None, deterministic: bool | None = None,
                 **overrides: Any) -> VisionTransformer:
    """Build a registered model, with any config field overridden, e.g. `num_classes=10`; randomly initialised
    (`vitkit.create_model(name, pretrained=PATH)` also loads weights). `attention` / `deterministic` set its kernel
    choice (`VisionTransformer.set_attention`; default 'auto')."""
    attention = attention_argument(attention, overrides)
    config = get_config(name)
    model = build_model(config.replace(**overrides) if overrides else config)
    if attention is not None or deterministic is not None:
        model.set_attention(attention or "auto", deterministic=deterministic)
    return model


def model_info(name: str) -> ModelInfo:
    """Parameter count and shape facts of a registered model, built on the meta device (no memory)."""
    config = get_config(name)
    with torch.device("meta"):
        model = build_model(config.replace(weight_init="skip"))
    params = sum(p.numel() for p in model.parameters())
    return ModelInfo(name, params, config.img_size, config.global_pool or "none")


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NAFLEX",
    "QWEN2_5_VL",
    "QWEN3_VL",
    "ModelInfo",
    "attention_argument",
    "build_model",
    "create_model",
    "get_config",
    "list_models",
    "model_info",
]
