"""The vision towers of Qwen2.5-VL and Qwen3-VL (transformers' `Qwen2_5_VisionTransformerPretrainedModel` and
`Qwen3VLVisionModel`), saved on their own or inside the whole vision-language model (`visual.` / `model.visual.`).

Both embed patches of two frames with a 3D convolution, rotate q and k by the patch's (row, column) ("axial" RoPE,
rotate-half pairs), run without a final norm, and hand a language model merged tokens: every 2 x 2 group of final
tokens through the patch merger. Qwen2.5-VL adds RMSNorm, SwiGLU MLPs and window attention (112 px windows in all
blocks but `fullatt_block_indexes`); Qwen3-VL a learned 48 x 48 position table (bilinear, corners aligned, resized to
each image's grid) and deepstack mergers on the outputs of `deepstack_visual_indexes`.
"""

from __future__ import annotations

import re
from typing import Any

from ..models import QWEN2_5_VL, QWEN3_VL
from .data_configs import FAMILIES, DataConfig
from .hf_common import hf_hints, vision_config
from .keymap import Renamed, StateDict, block_count, rename, take_prefix

_MLP = r"^blocks\.(\d+)\.mlp\."
QWEN2_5_RULES = [
    (_MLP + r"gate_proj\.", r"blocks.\1.mlp.fc1_g."),
    (_MLP + r"up_proj\.", r"blocks.\1.mlp.fc1_x."),
    (_MLP + r"down_proj\.", r"blocks.\1.mlp.fc2."),
    (r"^merger\.ln_q\.", "merger.norm."),
    (r"^merger\.mlp\.0\.", "merger.fc1."),
    (r"^merger\.mlp\.2\.", "merger.fc2."),
]
QWEN3_RULES = [
    (_MLP + r"linear_fc([12])\.", r"blocks.\1.mlp.fc\2."),
    (r"^merger\.linear_fc([12])\.", r"merger.fc\1."),
    (r"^deepstack_merger_list\.(\d+)\.linear_fc([12])\.", r"deepstack.\1.fc\2."),
    (r"^deepstack_merger_list\.(\d+)\.norm\.", r"deepstack.\1.norm."),
]
# The whole VLM's checkpoint keeps the tower under one of these (transformers 5 / the released files).
TOWER_PREFIXES = ("model.visual.", "visual.")
# What the released towers use where a checkpoint comes without its config.json / preprocessor_config.json.
QWEN2_5_DEFAULTS = {"window_size": 8, "full_attention_blocks": (7, 15, 23, 31), "rope_theta": 10000.0,
                    "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 16384}
QWEN3_DEFAULTS = {"rope_theta": 10000.0, "min_pixels": 65536, "max_pixels": 16777216}


def tower_keys(state_dict: StateDict) -> tuple[StateDict, list[str]]:
    """The tower's keys of a tower or whole-VLM checkpoint, prefix stripped, and a 'dropped' line for the rest. A
    3D patch kernel one frame deep (temporal_patch_size 1) becomes the 2D kernel it is."""
    sd, dropped = dict(state_dict), []
    for prefix in TOWER_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd, dropped = take_prefix(sd, prefix, "the language model")
            break
    kernel = sd.get("patch_embed.proj.weight")
    if kernel is not None and kernel.dim() == 5 and kernel.shape[2] == 1:
        sd["patch_embed.proj.weight"] = kernel[:, :, 0]  # (D, C, 1, p, p) -> (D, C, p, p)
    return sd, dropped


def _frames(state_dict: StateDict) -> dict[str, int]:
    """Frames per patch, as the patch kernel holds them (a 2D kernel: one)."""
    kernel = state_dict["patch_embed.proj.weight"]
    return {"temporal_patch_size": kernel.shape[2] if kernel.dim() == 5 else 1}


def _common(config: dict[str, Any], preprocess: dict[str, Any], defaults: dict[str, Any],
            meta: dict[str, Any], family: DataConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """Fields both towers read the same way from config.json and preprocessor_config.json."""
    hints, assumed = hf_hints(meta, {}, family)
    if "num_heads" in config:
        hints["num_heads"] = config["num_heads"]
    if "spatial_merge_size" in config:
        hints["merge_size"] = config["spatial_merge_size"]
    theta = (config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta"))
    if theta is not None:
        hints["rope_theta"] = float(theta)
    size = preprocess.get("size") or {}
    pixels = (preprocess.get("min_pixels", size.get("shortest_edge")), preprocess.get("max_pixels",
                                                                                      size.get("longest_edge")))
    if all(isinstance(p, int) for p in pixels):
        hints["min_pixels"], hints["max_pixels"] = pixels
    source = "the released towers' value; not in the checkpoint's config"
    for field, value in defaults.items():
        if field not in hints:
            hints[field] = value
            assumed[field] = f"{value!r} ({source})"
    return hints, assumed


def convert_hf_qwen2_5_vl(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    sd, dropped = tower_keys(state_dict)
    out = rename(sd, QWEN2_5_RULES)
    config, preprocess = vision_config(meta), meta.get("preprocessor") or {}
    defaults = dict(QWEN2_5_DEFAULTS, act_layer=QWEN2_5_VL["act_layer"])
    hints, assumed = _common(config, preprocess, defaults, meta, FAMILIES["qwen2_5_vl"])
    patch, merge = out["patch_embed.proj.weight"].shape[-1], hints.get("merge_size", 2)
    if "window_size" in config:  # in pixels there, in whole merge groups of patches here, as HF rounds it
        hints["window_size"] = config["window_size"] // merge // patch * merge
        assumed.pop("window_size", None)
    if "fullatt_block_indexes" in config:
        hints["full_attention_blocks"] = tuple(config["fullatt_block_indexes"])
        assumed.pop("full_attention_blocks", None)
    depth = block_count(out)  # indices past the last block change nothing (transformers' default lists 4 of 32)
    hints["full_attention_blocks"] = tuple(i for i in hints["full_attention_blocks"] if i < depth)
    return Renamed(out, hints={**QWEN2_5_VL, **hints, **_frames(out)}, dropped=dropped, assumed=assumed)


def convert_hf_qwen3_vl(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    sd, dropped = tower_keys(state_dict)
    out = rename(sd, QWEN3_RULES)
    out["pos_embed"] = out.pop("pos_embed.weight")[None]  # (N, D) -> (1, N, D)
    config, preprocess = vision_config(meta), meta.get("preprocessor") or {}
    defaults = dict(QWEN3_DEFAULTS, act_layer=QWEN3_VL["act_layer"])
    hints, assumed = _common(config, preprocess, defaults, meta, FAMILIES["qwen3_vl"])
    stacked = sorted({int(m[1]) for k in out if (m := re.match(r"^deepstack\.(\d+)\.", k))})
    if "deepstack_visual_indexes" in config:
        hints["deepstack"] = tuple(config["deepstack_visual_indexes"])
    required = {}
    if stacked and "deepstack" not in hints:
        required["deepstack"] = (f"the checkpoint has {len(stacked)} deepstack mergers but no config.json saying which "
                                 "blocks feed them (deepstack_visual_indexes)")
    side = round(out["pos_embed"].shape[1] ** 0.5)
    hints["img_size"] = side * out["patch_embed.proj.weight"].shape[-1]
    return Renamed(out, hints={**QWEN3_VL, **hints, **_frames(out)}, dropped=dropped, assumed=assumed,
                   required=required)
