"""HF SigLIP and SigLIP2 (`SiglipVisionModel` / `Siglip2VisionModel`, or the vision tower of a two-tower model).

SigLIP2's NaFlex towers embed patches with a Linear on each patch flattened in (row, column, channel) order; it
becomes vitkit's conv patch embedding (the same weights in (channel, row, column) order), and their learned 16 x 16
table is resized to each image's grid with antialiased bilinear interpolation.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..models import NAFLEX
from .data_configs import DATA_FIELDS, FAMILIES
from .hf_common import hf_hints, vision_config
from .keymap import Renamed, StateDict, drop_keys, fuse_qkv, rename

_LAYER = r"^encoder\.layers\.(\d+)\."
# Shared with HF CLIP, whose encoder layers are named the same.
ENCODER_RULES = [
    (r"^embeddings\.patch_embedding\.", "patch_embed.proj."),
    (_LAYER + r"layer_norm1\.", r"blocks.\1.norm1."),
    (_LAYER + r"layer_norm2\.", r"blocks.\1.norm2."),
    (_LAYER + r"self_attn\.q_proj\.", r"blocks.\1.attn.q."),
    (_LAYER + r"self_attn\.k_proj\.", r"blocks.\1.attn.k."),
    (_LAYER + r"self_attn\.v_proj\.", r"blocks.\1.attn.v."),
    (_LAYER + r"self_attn\.out_proj\.", r"blocks.\1.attn.proj."),
    (_LAYER + r"mlp\.fc1\.", r"blocks.\1.mlp.fc1."),
    (_LAYER + r"mlp\.fc2\.", r"blocks.\1.mlp.fc2."),
    (r"^post_layernorm\.", "norm."),
]
HEAD_RULES = [
    (r"^head\.probe$", "attn_pool.latent"),
    (r"^head\.attention\.out_proj\.", "attn_pool.proj."),
    (r"^head\.layernorm\.", "attn_pool.norm."),
    (r"^head\.mlp\.", "attn_pool.mlp."),
]
DEFAULTS = {"act_layer": "gelu_tanh", "norm_eps": 1e-6}
TEXT_TOWER = r"^(?:text_model\.|logit_scale$|logit_bias$|text_projection\.)"


def vision_tower(state_dict: StateDict, dropped: list[str]) -> StateDict:
    """The vision keys of an HF two-tower model or vision model, with `vision_model.` stripped."""
    state_dict = drop_keys(state_dict, TEXT_TOWER, "text tower", dropped)
    state_dict = drop_keys(state_dict, r"(?:^|\.)embeddings\.position_ids$", "index buffer", dropped)
    return {k.removeprefix("vision_model."): v for k, v in state_dict.items()}


def convert_hf_siglip(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    dropped: list[str] = []
    sd = vision_tower(state_dict, dropped)
    out = rename(sd, ENCODER_RULES + HEAD_RULES)
    if "embeddings.position_embedding.weight" in out:
        out["pos_embed"] = out.pop("embeddings.position_embedding.weight")[None]  # (N, D) -> (1, N, D)
    for kind in ("weight", "bias"):
        packed = out.pop(f"head.attention.in_proj_{kind}", None)
        if packed is not None:  # nn.MultiheadAttention packs q, k, v: (3D, ...) -> q (D, ...), kv (2D, ...)
            dim = packed.shape[0] // 3
            out[f"attn_pool.q.{kind}"], out[f"attn_pool.kv.{kind}"] = packed[:dim], packed[dim:]
    naflex = out["patch_embed.proj.weight"].dim() == 2  # SigLIP2 NaFlex
    hints, assumed = hf_hints(meta, DEFAULTS, FAMILIES["naflex" if naflex else "hf_siglip"])
    config = vision_config(meta)
    use_head = config.get("vision_use_head", "attn_pool.latent" in out)
    pool = {"global_pool": "map"} if use_head else {"global_pool": "avg", "fc_norm": False}
    hints.update(class_token=False, pos_embed_antialias=False, **pool)
    if naflex:
        channels = config.get("num_channels", 3)
        patch = math.isqrt(out["patch_embed.proj.weight"].shape[1] // channels)
        out["patch_embed.proj.weight"] = naflex_to_conv(out["patch_embed.proj.weight"], patch, channels)
        grid = math.isqrt(out["pos_embed"].shape[1])
        hints.update({k: v for k, v in NAFLEX.items() if k not in DATA_FIELDS}, patch_size=patch, img_size=grid * patch,
                     max_patches=grid * grid)
    return Renamed(fuse_qkv(out), hints=hints, dropped=dropped, assumed=assumed)


def naflex_to_conv(weight: torch.Tensor, patch: int, channels: int) -> torch.Tensor:
    """SigLIP2's patch Linear (D, p*p*C), inputs in (row, column, channel) order -> conv weights (D, C, p, p)."""
    return weight.reshape(weight.shape[0], patch, patch, channels).permute(0, 3, 1, 2).contiguous()
