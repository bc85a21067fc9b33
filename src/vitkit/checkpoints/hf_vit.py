"""HF ViT (`ViTModel`, `ViTForImageClassification`): hub (transformers 4) names and transformers 5 module names."""

from __future__ import annotations

from typing import Any

from .data_configs import FAMILIES
from .hf_common import hf_hints
from .keymap import Renamed, StateDict, drop_keys, fuse_qkv, rename

_LAYER = r"^(?:vit\.)?(?:encoder\.layer|layers)\.(\d+)\."
RULES = [
    (r"^(?:vit\.)?embeddings\.cls_token$", "cls_token"),
    (r"^(?:vit\.)?embeddings\.position_embeddings$", "pos_embed"),
    (r"^(?:vit\.)?embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (_LAYER + r"layernorm_before\.", r"blocks.\1.norm1."),
    (_LAYER + r"layernorm_after\.", r"blocks.\1.norm2."),
    (_LAYER + r"attention\.(?:attention\.query|q_proj)\.", r"blocks.\1.attn.q."),
    (_LAYER + r"attention\.(?:attention\.key|k_proj)\.", r"blocks.\1.attn.k."),
    (_LAYER + r"attention\.(?:attention\.value|v_proj)\.", r"blocks.\1.attn.v."),
    (_LAYER + r"attention\.(?:output\.dense|o_proj)\.", r"blocks.\1.attn.proj."),
    (_LAYER + r"(?:intermediate\.dense|mlp\.fc1)\.", r"blocks.\1.mlp.fc1."),
    (_LAYER + r"(?:output\.dense|mlp\.fc2)\.", r"blocks.\1.mlp.fc2."),
    (r"^(?:vit\.)?layernorm\.", "norm."),
    (r"^classifier\.", "head."),
]
DEFAULTS = {"act_layer": "gelu", "norm_eps": 1e-12}


def convert_hf_vit(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    dropped: list[str] = []
    state_dict = drop_keys(state_dict, r"^(?:vit\.)?embeddings\.mask_token$", "masked-image-modeling token", dropped)
    state_dict = drop_keys(state_dict, r"^(?:vit\.)?pooler\.", "ViTModel's dense+tanh pooler; vitkit pools the "
                           "class token after the final norm", dropped)
    hints, assumed = hf_hints(meta, DEFAULTS, FAMILIES["hf_vit"])
    hints.update(class_token=True, global_pool="token", pos_embed_antialias=False)
    return Renamed(fuse_qkv(rename(state_dict, RULES)), hints=hints, dropped=dropped, assumed=assumed)
