"""DINOv3: Hugging Face `DINOv3ViTModel` directories and Meta's original layout (facebookresearch/dinov3).

Both read the class token after the final norm (HF's `pooler_output`), so converted weights pool with 'token' and
no fc_norm; DINOv3's RoPE (theta from the config, 100 by default) replaces a position table. The original masks the
key part of its qkv bias (`bias_mask`); HF has no key bias at all: in vitkit both are `key_bias=False`.
"""

from __future__ import annotations

from typing import Any

import torch

from .data_configs import FAMILIES
from .hf_common import hf_hints, vision_config
from .keymap import Renamed, StateDict, block_count, drop_keys, rename

# What every DINOv3 checkpoint shares, whichever layout (its data config: FAMILIES['dinov3'], unless stated).
DINOV3 = dict(rope="dinov3", pos_embed="none", class_token=True, global_pool="token", fc_norm=False,
              dynamic_img_size=True)
DEFAULTS = {"rope_theta": 100.0, "norm_eps": 1e-5, "act_layer": "gelu", "img_size": 224}

_LAYER = r"^(?:model\.)?layer\.(\d+)\."  # transformers saves `layer.N.`; its module path is `model.layer.N.`
HF_RULES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.register_tokens$", "reg_token"),
    (r"^embeddings\.patch_embeddings\.", "patch_embed.proj."),
    (_LAYER + r"norm([12])\.", r"blocks.\1.norm\2."),
    (_LAYER + r"attention\.([qkv])_proj\.", r"blocks.\1.attn.\2_proj."),
    (_LAYER + r"attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (_LAYER + r"layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (_LAYER + r"mlp\.gate_proj\.", r"blocks.\1.mlp.fc1_g."),
    (_LAYER + r"mlp\.up_proj\.", r"blocks.\1.mlp.UP."),  # fc1 (plain MLP) or fc1_x (gated): settled below
    (_LAYER + r"mlp\.down_proj\.", r"blocks.\1.mlp.fc2."),
    (r"^norm\.", "norm."),
]
ORIGINAL_RULES = [
    (r"^storage_tokens$", "reg_token"),
    (r"\.mlp\.w1\.", ".mlp.fc1_g."),
    (r"\.mlp\.w2\.", ".mlp.fc1_x."),
    (r"\.mlp\.w3\.", ".mlp.fc2."),
]


def _fuse(sd: StateDict) -> StateDict:
    """Each block's q/k/v projections -> `attn.qkv`, the absent key bias as zeros."""
    out = dict(sd)
    for i in range(block_count(out)):
        attn = f"blocks.{i}.attn."
        out[attn + "qkv.weight"] = torch.cat([out.pop(attn + f"{p}_proj.weight") for p in "qkv"])
        q, k, v = (out.pop(attn + f"{p}_proj.bias", None) for p in "qkv")
        if q is not None or v is not None:
            like = q if q is not None else v
            out[attn + "qkv.bias"] = torch.cat([t if t is not None else torch.zeros_like(like) for t in (q, k, v)])
    return out


def _mlp_names(sd: StateDict) -> StateDict:
    """HF's up_proj is the value half beside a gate (fc1_x), else the MLP's only input projection (fc1)."""
    gated = "blocks.0.mlp.fc1_g.weight" in sd
    return {k.replace(".mlp.UP.", ".mlp.fc1_x." if gated else ".mlp.fc1."): v for k, v in sd.items()}


def convert_hf_dinov3(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    dropped: list[str] = []
    sd = drop_keys(state_dict, r"^embeddings\.mask_token$", "masked-image-modeling token", dropped)
    out = _fuse(_mlp_names(rename(sd, HF_RULES)))
    hints, assumed = hf_hints(meta, DEFAULTS, FAMILIES["dinov3"])
    config = vision_config(meta)
    names = {"rope_theta": "rope_theta", "layerscale_value": "init_values", "pos_embed_shift": "rope_shift",
             "pos_embed_jitter": "rope_jitter", "pos_embed_rescale": "rope_rescale"}
    hints.update({field: config[key] for key, field in names.items() if key in config})
    hints["key_bias"] = bool(config.get("key_bias", False))
    if "blocks.0.mlp.fc1_g.weight" in out:
        hints["mlp_layer"] = "swiglu"
    return Renamed(out, hints={**DINOV3, **hints}, dropped=dropped, assumed=assumed)


def convert_dinov3(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    """Meta's original layout (timm's names but `storage_tokens`, `w1/w2/w3` SwiGLU, a masked qkv bias, and the
    pretraining-only mask token, RoPE periods buffer and local-crop class norm)."""
    dropped: list[str] = []
    sd = drop_keys(state_dict, r"(^mask_token$|\.bias_mask$|^rope_embed\.|^local_cls_norm\.)",
                   "pretraining-only or rebuilt at load", dropped)
    out = rename(sd, ORIGINAL_RULES)
    hints: dict[str, Any] = {**DINOV3, **DEFAULTS, "key_bias": False}
    assumed = {k: f"{v!r} (DINOv3's default; not stored in the weights)" for k, v in DEFAULTS.items()}
    FAMILIES["dinov3"].fill(hints, assumed)
    if "blocks.0.mlp.fc1_g.weight" in out:
        hints.update(mlp_layer="swiglu", act_layer="silu")
        assumed.pop("act_layer")
    return Renamed(out, hints=hints, dropped=dropped, assumed=assumed)
