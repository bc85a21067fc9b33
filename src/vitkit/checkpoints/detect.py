"""Which library wrote a state dict, told from its keys alone; the registry of formats vitkit converts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .big_vision import convert_big_vision, is_big_vision
from .clip import convert_hf_clip, convert_open_clip
from .dinov2 import convert_dinov2, convert_hf_dinov2
from .dinov3 import convert_dinov3, convert_hf_dinov3
from .eva import convert_timm_eva
from .hf_siglip import convert_hf_siglip
from .hf_vit import convert_hf_vit
from .keymap import Renamed, StateDict
from .qwen_vl import convert_hf_qwen2_5_vl, convert_hf_qwen3_vl
from .timm import convert_deepseek_vl2, convert_open_clip_timm, convert_timm, convert_timm_naflex
from .vit_pytorch import convert_vit_pytorch, convert_vit_pytorch_simple


@dataclass(frozen=True)
class Format:
    """A checkpoint layout vitkit reads: its name (`source_format=`), what writes it, and its converter."""

    name: str
    description: str
    convert: Callable[[StateDict, dict[str, Any]], Renamed]


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("timm", "timm VisionTransformer state dict (also vitkit's own weights)", convert_timm),
    Format("timm-naflex", "timm NaFlexVit (embeds.proj on flattened patches, a grid table)", convert_timm_naflex),
    Format("timm-eva", "timm Eva: DINOv3, EVA-02, RoPE-Mixed (gamma_1, q_bias / v_bias, rope.freqs)", convert_timm_eva),
    Format("deepseek-vl2", "DeepSeek-VL2 checkpoint: its `vision.` SigLIP tower (timm layout)", convert_deepseek_vl2),
    Format("open_clip-timm", "OpenCLIP model with a timm image tower (`visual.trunk.`)", convert_open_clip_timm),
    Format("hf-vit", "Hugging Face ViTModel / ViTForImageClassification", convert_hf_vit),
    Format("hf-siglip", "Hugging Face SiglipVisionModel / SiglipModel (vision tower)", convert_hf_siglip),
    Format("hf-clip", "Hugging Face CLIPVisionModel(WithProjection) / CLIPModel (vision tower)", convert_hf_clip),
    Format("open_clip", "OpenAI CLIP / OpenCLIP ViT (`visual.` tower, or a bare visual state dict)", convert_open_clip),
    Format("hf-dinov2", "Hugging Face Dinov2Model / Dinov2WithRegistersModel", convert_hf_dinov2),
    Format("dinov2", "original DINOv2 (facebookresearch torch.hub), with or without registers", convert_dinov2),
    Format("hf-qwen2.5-vl", "Hugging Face Qwen2.5-VL vision tower, alone or in the whole VLM (`visual.`)",
           convert_hf_qwen2_5_vl),
    Format("hf-qwen3-vl", "Hugging Face Qwen3-VL vision tower, alone or in the whole VLM (`visual.`)",
           convert_hf_qwen3_vl),
    Format("hf-dinov3", "Hugging Face DINOv3ViTModel", convert_hf_dinov3),
    Format("dinov3", "original DINOv3 (facebookresearch/dinov3): storage tokens, masked key bias", convert_dinov3),
    Format("vit-pytorch", "lucidrains vit-pytorch ViT", convert_vit_pytorch),
    Format("vit-pytorch-simple", "lucidrains vit-pytorch SimpleViT", convert_vit_pytorch_simple),
    Format("big_vision", "Google JAX .npz: big_vision ViT / SigLIP image tower, original ViT", convert_big_vision),
)}


def _has(keys: set[str], *fragments: str) -> bool:
    return any(any(f in k for f in fragments) for k in keys)


def detect_format(state_dict: StateDict) -> str | None:
    """The name of the format whose keys these are, or None when no rule matches."""
    keys = set(state_dict)
    if is_big_vision(keys):
        return "big_vision"
    if _has(keys, "visual.trunk."):
        return "open_clip-timm"
    if {"visual.class_embedding", "class_embedding"} & keys or _has(keys, "visual.transformer.resblocks."):
        return "open_clip"
    if "to_patch_embedding.2.weight" in keys:
        return "vit-pytorch" if "pos_embedding" in keys else "vit-pytorch-simple"
    if _has(keys, "embeddings.patch_embedding.weight"):
        return "hf-clip" if _has(keys, "embeddings.class_embedding") else "hf-siglip"
    if _has(keys, "embeddings.patch_embeddings.projection.weight"):
        return "hf-vit" if _has(keys, "layernorm_before") else "hf-dinov2"
    if "embeddings.patch_embeddings.weight" in keys and _has(keys, "layer_scale1.lambda1"):
        return "hf-dinov3"
    if _has(keys, "merger.ln_q.weight"):
        return "hf-qwen2.5-vl"
    if _has(keys, "merger.linear_fc1.weight"):
        return "hf-qwen3-vl"
    if "storage_tokens" in keys:
        return "dinov3"
    if "embeds.proj.weight" in keys:
        return "timm-naflex"
    if any(k.startswith("vision.") for k in keys) and _has(keys, "vision.patch_embed.proj.weight"):
        return "deepseek-vl2"
    if "patch_embed.proj.weight" in keys:
        if "rope.freqs" in keys or _has(keys, ".gamma_1", ".attn.q_bias", ".attn.q_proj.weight"):
            return "timm-eva"
        dinov2 = {"mask_token", "register_tokens"} & keys or _has(keys, ".mlp.w12.")
        return "dinov2" if dinov2 else "timm"
    return None


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ValueError(f"unknown source_format {name!r}; choose 'auto' or one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def strip_wrappers(state_dict: StateDict) -> StateDict:
    """Drop the `module.` (DistributedDataParallel) and `_orig_mod.` (torch.compile) prefixes every key carries."""
    for prefix in ("module.", "_orig_mod."):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict
