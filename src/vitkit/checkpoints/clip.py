"""CLIP image towers: HF `CLIPVisionModel` / `CLIPModel`, and OpenAI CLIP / OpenCLIP `visual.` state dicts.

Both are pre-norm ViTs with an extra LayerNorm before the blocks (`norm_pre`), a bias-free patch conv and a
class token; the optional projection into the joint embedding space becomes a zero-bias `head`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..models import INTERPOLATIONS
from .data_configs import FAMILIES
from .hf_common import hf_hints
from .hf_siglip import ENCODER_RULES, vision_tower
from .keymap import Renamed, StateDict, drop_keys, fuse_qkv, rename, take_prefix

HF_DEFAULTS = {"act_layer": "quick_gelu", "norm_eps": 1e-5}
_BLOCK = r"^transformer\.resblocks\.(\d+)\."
OPENAI_RULES = [
    (r"^conv1\.", "patch_embed.proj."),
    (r"^ln_pre\.", "norm_pre."),
    (_BLOCK + r"ln_1\.", r"blocks.\1.norm1."),
    (_BLOCK + r"ln_2\.", r"blocks.\1.norm2."),
    (_BLOCK + r"attn\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2"),
    (_BLOCK + r"attn\.out_proj\.", r"blocks.\1.attn.proj."),
    (_BLOCK + r"mlp\.c_fc\.", r"blocks.\1.mlp.fc1."),
    (_BLOCK + r"mlp\.c_proj\.", r"blocks.\1.mlp.fc2."),
    (_BLOCK + r"ls_1\.gamma$", r"blocks.\1.ls1.gamma"),
    (_BLOCK + r"ls_2\.gamma$", r"blocks.\1.ls2.gamma"),
    (r"^ln_post\.", "norm."),
]
CLIP_HINTS = {"class_token": True, "global_pool": "token", "pos_embed_antialias": False}


def _projection_head(out: StateDict, weight: torch.Tensor | None) -> None:
    """A bias-free (D -> E) projection as vitkit's head: weight (E, D) and a zero bias."""
    if weight is not None:
        out["head.weight"] = weight
        out["head.bias"] = torch.zeros(weight.shape[0], dtype=weight.dtype)


def convert_hf_clip(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    dropped: list[str] = []
    projection = state_dict.get("visual_projection.weight")
    sd = vision_tower({k: v for k, v in state_dict.items() if k != "visual_projection.weight"}, dropped)
    out = rename(sd, [(r"^pre_layrnorm\.", "norm_pre."), *ENCODER_RULES])
    if "embeddings.class_embedding" in out:
        out["cls_token"] = out.pop("embeddings.class_embedding")[None, None]  # (D,) -> (1, 1, D)
    if "embeddings.position_embedding.weight" in out:
        out["pos_embed"] = out.pop("embeddings.position_embedding.weight")[None]  # (1 + N, D) -> (1, 1 + N, D)
    _projection_head(out, projection)
    hints, assumed = hf_hints(meta, HF_DEFAULTS, FAMILIES["hf_clip"])
    return Renamed(fuse_qkv(out), hints={**hints, **CLIP_HINTS}, dropped=dropped, assumed=assumed)


# OpenCLIP's eval resize modes vitkit's crop_pct expresses: the shorter side to the model's size and a centre crop
# of that size ('shortest'), or straight to the model's size ('squash'); both keep the whole shorter side.
RESIZE_MODES = {"shortest": 1.0, "squash": 1.0}


def preprocess_hints(meta: dict[str, Any]) -> dict[str, Any]:
    """The data config an OpenCLIP `open_clip_config.json` states in `preprocess_cfg` (mean, std, interpolation,
    resize_mode as crop_pct)."""
    preprocess = (meta.get("open_clip") or {}).get("preprocess_cfg") or {}
    hints: dict[str, Any] = {k: tuple(preprocess[k]) for k in ("mean", "std") if k in preprocess}
    if preprocess.get("interpolation") in INTERPOLATIONS:
        hints["interpolation"] = preprocess["interpolation"]
    if preprocess.get("resize_mode") in RESIZE_MODES:
        hints["crop_pct"] = RESIZE_MODES[preprocess["resize_mode"]]
    return hints


def open_clip_hints(meta: dict[str, Any]) -> dict[str, Any]:
    """Fields from an OpenCLIP `open_clip_config.json` (`model_cfg.vision_cfg`, `quick_gelu`, `preprocess_cfg`)."""
    model_cfg = (meta.get("open_clip") or {}).get("model_cfg") or {}
    vision = model_cfg.get("vision_cfg") or {}
    hints = preprocess_hints(meta)
    if model_cfg:
        hints["act_layer"] = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    if "width" in vision:
        hints["num_heads"] = vision["width"] // vision.get("head_width", 64)
    if "image_size" in vision:
        hints["img_size"] = vision["image_size"]
    return hints


def convert_open_clip(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    """OpenAI CLIP / OpenCLIP: the `visual.` tower of a full model, or a bare visual state dict."""
    prefix = "visual." if any(k.startswith("visual.") for k in state_dict) else ""
    sd, dropped = take_prefix(state_dict, prefix, "text tower, logit scale")
    sd = drop_keys(sd, r"^attn_pool\.|^ln_attn|^ln_inner", "OpenCLIP variants vitkit does not build", dropped)
    out = rename(sd, OPENAI_RULES)
    if "class_embedding" in out:
        out["cls_token"] = out.pop("class_embedding")[None, None]  # (D,) -> (1, 1, D)
    if "positional_embedding" in out:
        out["pos_embed"] = out.pop("positional_embedding")[None]  # (1 + N, D) -> (1, 1 + N, D)
    proj = out.pop("proj", None)
    _projection_head(out, None if proj is None else proj.t())  # x @ proj, proj (D, E) -> Linear weight (E, D)
    hints = {"norm_eps": 1e-5, **CLIP_HINTS, **open_clip_hints(meta)}
    assumed = {"norm_eps": "1e-05 (CLIP's LayerNorm default)"}
    FAMILIES["open_clip"].fill(hints, assumed)
    required = {}
    if "act_layer" not in hints:
        required["act_layer"] = ("OpenAI's CLIP weights use 'quick_gelu', most OpenCLIP (LAION, DataComp) weights "
                                 "'gelu'; the model's open_clip_config.json says which")
    return Renamed(out, hints=hints, dropped=dropped, assumed=assumed, required=required)
