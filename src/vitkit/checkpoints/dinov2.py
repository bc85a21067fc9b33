"""DINOv2: HF `Dinov2Model` / `Dinov2WithRegistersModel` (hub and transformers 5 names) and the original
facebookresearch layout (optionally chunked blocks), with register tokens, LayerScale and SwiGLU.

DINOv2 adds the position table to [cls, patches] and inserts the registers after that, so with registers
the class row is folded into the class token and the table covers patches only (`no_embed_class`), as timm.
"""

from __future__ import annotations

from typing import Any

import torch

from .data_configs import FAMILIES
from .hf_common import hf_hints, vision_config
from .keymap import Renamed, StateDict, drop_keys, fuse_qkv, rename

_LAYER = r"^encoder\.layer\.(\d+)\."
HF_RULES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.register_tokens$", "reg_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (_LAYER + r"norm1\.", r"blocks.\1.norm1."),
    (_LAYER + r"norm2\.", r"blocks.\1.norm2."),
    (_LAYER + r"attention\.(?:attention\.query|q_proj)\.", r"blocks.\1.attn.q."),
    (_LAYER + r"attention\.(?:attention\.key|k_proj)\.", r"blocks.\1.attn.k."),
    (_LAYER + r"attention\.(?:attention\.value|v_proj)\.", r"blocks.\1.attn.v."),
    (_LAYER + r"attention\.(?:output\.dense|o_proj)\.", r"blocks.\1.attn.proj."),
    (_LAYER + r"layer_scale1\.lambda1$", r"blocks.\1.ls1.gamma"),
    (_LAYER + r"layer_scale2\.lambda1$", r"blocks.\1.ls2.gamma"),
    (_LAYER + r"mlp\.(?:fc1|weights_in)\.", r"blocks.\1.mlp.fc1."),
    (_LAYER + r"mlp\.(?:fc2|weights_out|down_proj)\.", r"blocks.\1.mlp.fc2."),
    (r"^layernorm\.", "norm."),
]
ORIGINAL_RULES = [
    (r"^blocks\.\d+\.(\d+)\.", r"blocks.\1."),  # chunked (giant): blocks.<chunk>.<index>. -> blocks.<index>.
    (r"^register_tokens$", "reg_token"),
]
ORIGINAL_MLP = [(r"\.mlp\.w12\.", ".mlp.fc1."), (r"\.mlp\.w3\.", ".mlp.fc2.")]
DEFAULTS = {"act_layer": "gelu", "norm_eps": 1e-6}


def _fuse_gate_up(sd: StateDict) -> StateDict:
    """transformers 5 splits SwiGLU's packed `weights_in` into gate_proj / up_proj: pack them back into fc1
    ([gate; up], the order SwiGLUPacked chunks)."""
    out = dict(sd)
    for key in [k for k in sd if ".mlp.gate_proj." in k]:
        up = key.replace(".mlp.gate_proj.", ".mlp.up_proj.")
        fc1 = key.replace("encoder.layer.", "blocks.").replace(".mlp.gate_proj.", ".mlp.fc1.")
        if up in out:
            out[fc1] = torch.cat([out.pop(key), out.pop(up)], dim=0)
    return out


def _fold_registers(sd: StateDict, hints: dict[str, Any]) -> None:
    """With registers: cls_token += pos_embed[:, :1] and the table keeps patch rows only."""
    if "reg_token" in sd and "pos_embed" in sd and "cls_token" in sd:
        sd["cls_token"] = sd["cls_token"] + sd["pos_embed"][:, :1]
        sd["pos_embed"] = sd["pos_embed"][:, 1:]
        hints["no_embed_class"] = True
    hints["pos_embed_antialias"] = "reg_token" in sd  # as HF's Dinov2WithRegisters; plain Dinov2 does not


def _common(sd: StateDict, hints: dict[str, Any], assumed: dict[str, str]) -> None:
    fc1, fc2 = sd.get("blocks.0.mlp.fc1.weight"), sd.get("blocks.0.mlp.fc2.weight")
    if fc1 is not None and fc2 is not None and fc2.shape[1] * 2 == fc1.shape[0]:
        hints.update(mlp_layer="swiglu_packed", act_layer="silu")  # DINOv2's SwiGLU is SiLU whatever hidden_act
        assumed.pop("act_layer", None)
    hints.update(class_token=True, global_pool="token")
    _fold_registers(sd, hints)


def convert_hf_dinov2(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    dropped: list[str] = []
    sd = drop_keys(state_dict, r"^embeddings\.mask_token$", "masked-image-modeling token", dropped)
    out = fuse_qkv(rename(_fuse_gate_up(sd), HF_RULES))
    hints, assumed = hf_hints(meta, DEFAULTS, FAMILIES["dinov2"])
    if "layerscale_value" in vision_config(meta):
        hints["init_values"] = vision_config(meta)["layerscale_value"]
    hints["dynamic_img_size"] = True  # HF DINOv2 interpolates the table for any input size
    _common(out, hints, assumed)
    return Renamed(out, hints=hints, dropped=dropped, assumed=assumed)


def convert_dinov2(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    """The original facebookresearch layout (timm names plus mask_token, register_tokens, w12/w3)."""
    dropped: list[str] = []
    sd = drop_keys(state_dict, r"^mask_token$", "masked-image-modeling token", dropped)
    out = rename(rename(sd, ORIGINAL_RULES), ORIGINAL_MLP)
    hints = {**DEFAULTS, "dynamic_img_size": True}
    assumed = {k: f"{v!r} (DINOv2's default; not stored in the weights)" for k, v in DEFAULTS.items()}
    FAMILIES["dinov2"].fill(hints, assumed)
    _common(out, hints, assumed)
    return Renamed(out, hints=hints, dropped=dropped, assumed=assumed)
