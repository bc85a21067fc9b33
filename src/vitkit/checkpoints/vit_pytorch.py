"""lucidrains' vit-pytorch: `SimpleViT` and `ViT`, each a VisionTransformer with its LayerNorm -> Linear ->
LayerNorm patch projection (SimpleViT: sin-cos positions, mean of the normed tokens, bias-free attention). Neither
stores its head count or, for SimpleViT, its image size; both use PyTorch's LayerNorm eps (1e-5) and exact GELU."""

from __future__ import annotations

from typing import Any

import torch

from .data_configs import FAMILIES
from .keymap import Renamed, StateDict, block_count, rename

_LAYER = r"^transformer\.layers\.(\d+)\."
_PATCH = [
    (r"^to_patch_embedding\.1\.", "patch_embed.norm_in."),
    (r"^to_patch_embedding\.2\.", "patch_embed.proj."),
    (r"^to_patch_embedding\.3\.", "patch_embed.norm."),
]
SIMPLE_RULES = [
    *_PATCH,
    (_LAYER + r"0\.norm\.", r"blocks.\1.norm1."),
    (_LAYER + r"0\.to_qkv\.", r"blocks.\1.attn.qkv."),
    (_LAYER + r"0\.to_out\.", r"blocks.\1.attn.proj."),
    (_LAYER + r"1\.net\.0\.", r"blocks.\1.norm2."),
    (_LAYER + r"1\.net\.1\.", r"blocks.\1.mlp.fc1."),
    (_LAYER + r"1\.net\.3\.", r"blocks.\1.mlp.fc2."),
    (r"^transformer\.norm\.", "norm."),
    (r"^linear_head\.", "head."),
]
VIT_RULES = [
    *_PATCH,
    (_LAYER + r"0\.norm\.", r"blocks.\1.norm1."),
    (_LAYER + r"0\.to_qkv\.", r"blocks.\1.attn.qkv."),
    (_LAYER + r"0\.to_out\.0\.", r"blocks.\1.attn.proj."),
    (_LAYER + r"1\.net\.0\.", r"blocks.\1.norm2."),
    (_LAYER + r"1\.net\.1\.", r"blocks.\1.mlp.fc1."),
    (_LAYER + r"1\.net\.4\.", r"blocks.\1.mlp.fc2."),
    (r"^transformer\.norm\.", "norm."),
    (r"^mlp_head\.", "head."),
]
ASSUMED_CHANNELS = "3 (the patch projection's input is channels x patch area; pass in_chans= if not RGB)"
# Both models; the patch size follows from the projection's width and in_chans (square patches unless told).
HINTS = {"patch_embed": "norm_linear_norm", "norm_eps": 1e-5, "act_layer": "gelu", "in_chans": 3}


def convert_vit_pytorch_simple(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    out = rename(state_dict, SIMPLE_RULES)
    hints = dict(HINTS, pos_embed="sincos", global_pool="avg", fc_norm=False)  # final norm on the tokens
    assumed = {"in_chans": ASSUMED_CHANNELS}
    FAMILIES["vit_pytorch"].fill(hints, assumed)
    return Renamed(out, hints=hints, assumed=assumed)


def convert_vit_pytorch(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    out = rename(state_dict, VIT_RULES)
    hints: dict[str, Any] = dict(HINTS)
    cls = out.pop("cls_token", None)  # (1, D) with pool='cls', (0, D) with pool='mean'
    if cls is not None and cls.shape[0]:
        out["cls_token"] = cls[None]  # (1, D) -> (1, 1, D)
    else:
        hints.update(global_pool="avg", fc_norm=False)  # mean of the normed tokens, no class token
    if "pos_embedding" in out:
        out["pos_embed"] = out.pop("pos_embedding")[None]  # (T, D) -> (1, T, D)
    for i in range(block_count(out)):
        # heads == 1 and dim_head == dim: vit-pytorch has no output projection; an identity one is exact.
        if f"blocks.{i}.attn.proj.weight" not in out and f"blocks.{i}.attn.qkv.weight" in out:
            qkv = out[f"blocks.{i}.attn.qkv.weight"]
            out[f"blocks.{i}.attn.proj.weight"] = torch.eye(qkv.shape[1], dtype=qkv.dtype)
            out[f"blocks.{i}.attn.proj.bias"] = torch.zeros(qkv.shape[1], dtype=qkv.dtype)
    assumed = {"in_chans": ASSUMED_CHANNELS, "global_pool": f"{hints.get('global_pool', 'token')!r} (from the "
               "class token's shape: vit-pytorch's pool='cls' keeps one, pool='mean' none)"}
    FAMILIES["vit_pytorch"].fill(hints, assumed)
    return Renamed(out, hints=hints, assumed=assumed)
