"""timm-layout checkpoints: timm itself, the DeepSeek-VL2 vision tower (`vision.`), OpenCLIP timm towers
(`visual.trunk.`). vitkit's layout is timm's, so these are identities once the prefix is stripped."""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from ..models import INTERPOLATIONS
from .clip import preprocess_hints
from .data_configs import DATA_FIELDS, FAMILIES, DataConfig, registered_data
from .keymap import Renamed, StateDict, take_prefix

TIMM_DEFAULTS = {
    "act_layer": ("gelu", "timm's default activation; not stored in the weights"),
    "norm_eps": (1e-6, "timm's default LayerNorm eps; not stored in the weights"),
}
# timm VisionTransformer keyword -> vitkit ViTConfig field, where the names differ.
TIMM_TO_VITKIT = {"pre_norm": "norm_pre"}
VITKIT_TO_TIMM = {v: k for k, v in TIMM_TO_VITKIT.items()}
TIMM_MLP = {"SwiGLUPacked": "swiglu_packed", "SwiGLU": "swiglu", "Mlp": "mlp"}


def _with_defaults(hints: dict[str, Any], family: DataConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """(`hints` over timm's defaults and `family`'s data config, {field: note} for each of those used)."""
    assumed = {k: f"{v!r} ({why})" for k, (v, why) in TIMM_DEFAULTS.items() if k not in hints}
    hints = {**{k: v for k, (v, _) in TIMM_DEFAULTS.items()}, **hints}
    family.fill(hints, assumed)
    return hints, assumed


def pretrained_cfg_hints(config: dict[str, Any]) -> dict[str, Any]:
    """The data config a timm hub `config.json` states in `pretrained_cfg` (timm's older files: at the top level,
    beside `architecture`): mean, std, crop_pct of a centre crop, interpolation, and a fixed-size model's input size."""
    pretrained = config.get("pretrained_cfg", config if "architecture" in config else {}) or {}
    hints: dict[str, Any] = {k: tuple(pretrained[k]) for k in ("mean", "std") if k in pretrained}
    if "crop_pct" in pretrained and pretrained.get("crop_mode", "center") == "center":
        hints["crop_pct"] = pretrained["crop_pct"]
    if pretrained.get("interpolation") in INTERPOLATIONS:
        hints["interpolation"] = pretrained["interpolation"]
    size = pretrained.get("input_size")
    if pretrained.get("fixed_input_size") and isinstance(size, list | tuple) and len(size) == 3:
        hints["img_size"] = tuple(size[1:])
    return hints


def timm_family(meta: dict[str, Any]) -> DataConfig:
    """The data config of the architecture a timm `config.json` names, where vitkit registers it; else AugReg's."""
    arch = str((meta.get("config") or {}).get("architecture", "")).split(".")[0]
    return registered_data(arch) or FAMILIES["augreg"]


def timm_hints(meta: dict[str, Any]) -> dict[str, Any]:
    """Config fields from vitkit's `timm_args.json` export or a timm hub `config.json` (architecture name of
    a model vitkit also registers, `pretrained_cfg` data config, `model_args`)."""
    from ..models import get_config, list_models

    hints: dict[str, Any] = {}
    exported = meta.get("timm_args") or {}
    args = dict(exported.get("model_args") or {})
    objects = exported.get("objects") or {}
    if "mlp_layer" in objects:
        args["mlp_layer"] = objects["mlp_layer"].rsplit(".", 1)[-1]
    if eps := re.search(r"eps=([-+.e0-9]+)", objects.get("norm_layer", "")):
        hints["norm_eps"] = float(eps[1])
    config = meta.get("config") or {}
    arch = str(config.get("architecture", "")).split(".")[0]
    if arch in list_models():
        registered = get_config(arch)
        hints.update({k: getattr(registered, k) for k in ("num_heads", "act_layer", "norm_eps", "img_size")})
    hints.update(pretrained_cfg_hints(config))
    args.update(config.get("model_args") or {})
    for key, value in args.items():
        key = TIMM_TO_VITKIT.get(key, key)
        hints[key] = TIMM_MLP.get(value, value) if key == "mlp_layer" else value
    return {k: TIMM_DEFAULTS[k][0] if v is None and k in TIMM_DEFAULTS else v for k, v in hints.items()}


def convert_timm(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    hints, assumed = _with_defaults(timm_hints(meta), timm_family(meta))
    return Renamed(dict(state_dict), hints=hints, assumed=assumed)


def deepseek_hints(meta: dict[str, Any]) -> dict[str, Any]:
    """Fields from a DeepSeek-VL2 `config.json` `vision_config` (width, layers, heads, image_size, ...)."""
    vision = (meta.get("config") or {}).get("vision_config") or {}
    names = {"heads": "num_heads", "image_size": "img_size", "global_pool": "global_pool",
             "ignore_head": "ignore_head", "class_token": "class_token", "select_layer": "select_layer"}
    hints = {field: vision[key] for key, field in names.items() if key in vision}
    if "img_size" in hints and "patch_size" in vision and hints["img_size"] % vision["patch_size"]:
        hints["crop_remainder"] = True  # 384 px with 14 px patches -> 27 x 27, as timm's conv does
    return hints


def convert_deepseek_vl2(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    """The `vision.` tower of a DeepSeek-VL2 checkpoint (timm's SigLIP ViT); language model and projector
    are dropped."""
    tower, dropped = take_prefix(state_dict, "vision.", "DeepSeek-VL2 language model and projector")
    hints, assumed = _with_defaults(deepseek_hints(meta), FAMILIES["deepseek_vl2"])
    if "act_layer" in assumed:
        assumed["act_layer"] = ("'gelu' (timm's vit_so400m_patch14_siglip_384, which vLLM and SGLang run as "
                                "DeepSeek-VL2's tower; DeepSeek's own siglip_vit.py forces GELU-tanh in the blocks: "
                                "pass act_layer='gelu_tanh' to match that code)")
    return Renamed(tower, hints=hints, dropped=dropped, assumed=assumed)


def convert_open_clip_timm(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    """An OpenCLIP model whose image tower is a timm ViT (`visual.trunk.`); its linear projection
    `visual.head.proj` becomes the (bias-free, so zero-bias) head."""
    proj = state_dict.get("visual.head.proj.weight")
    rest = {k: v for k, v in state_dict.items() if k != "visual.head.proj.weight"}
    tower, dropped = take_prefix(rest, "visual.trunk.", "text tower, logit scale")
    if proj is not None:
        tower["head.weight"] = proj
        tower["head.bias"] = torch.zeros(proj.shape[0], dtype=proj.dtype)
    hints, assumed = _with_defaults({**timm_hints(meta), **preprocess_hints(meta)}, FAMILIES["open_clip"])
    return Renamed(tower, hints=hints, dropped=dropped, assumed=assumed)


def convert_timm_naflex(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    """timm's `NaFlexVit` (`naflexvit_*`): timm's layout but for its patch Linear on (row, column, channel) patches
    (`embeds.proj`, to vitkit's conv weights) and its grid-shaped table `embeds.pos_embed` (1, h, w, D); SigLIP2's
    NaFlex sizing (antialiased bilinear table resize), GELU-tanh for the SigLIP weights timm ports."""
    from ..models import NAFLEX
    from .hf_siglip import naflex_to_conv

    sd = {k: v for k, v in state_dict.items() if not k.startswith("embeds.")}
    table = state_dict["embeds.pos_embed"]  # (1, h, w, D)
    weight = state_dict["embeds.proj.weight"]  # (D, p * p * C)
    hints = timm_hints(meta)
    channels = hints.get("in_chans", 3)
    patch = math.isqrt(weight.shape[1] // channels)
    sd["patch_embed.proj.weight"] = naflex_to_conv(weight, patch, channels)
    if "embeds.proj.bias" in state_dict:
        sd["patch_embed.proj.bias"] = state_dict["embeds.proj.bias"]
    sd["pos_embed"] = table.reshape(1, table.shape[1] * table.shape[2], table.shape[3])
    grid = (table.shape[1] * patch, table.shape[2] * patch)
    defaults = {"act_layer": "gelu_tanh", "norm_eps": 1e-6, "class_token": False, "global_pool": "map",
                "img_size": grid, "max_patches": table.shape[1] * table.shape[2],
                **{k: v for k, v in NAFLEX.items() if k not in DATA_FIELDS}}
    assumed = {k: f"{v!r} (timm's naflexvit_*_siglip settings; not stored in the weights)"
               for k, v in defaults.items() if k not in hints and k in ("act_layer", "global_pool")}
    hints = {**defaults, **hints}
    FAMILIES["naflex"].fill(hints, assumed)
    return Renamed(sd, hints=hints, assumed=assumed)
