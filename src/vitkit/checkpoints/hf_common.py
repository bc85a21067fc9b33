"""What the Hugging Face vision configs share: reading a (possibly nested) config.json into vitkit fields."""

from __future__ import annotations

from typing import Any

from .data_configs import DataConfig

# HF `hidden_act` -> vitkit act_layer (gelu_new / gelu_fast are the tanh approximation too).
HF_ACTS = {
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "quick_gelu": "quick_gelu",
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
}
VITKIT_TO_HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "quick_gelu": "quick_gelu", "silu": "silu",
                    "relu": "relu"}


def vision_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The vision part of an HF config.json: `vision_config` of a two-tower model, else the file itself."""
    config = meta.get("config") or {}
    return config.get("vision_config") or config


def hf_hints(meta: dict[str, Any], defaults: dict[str, Any],
             family: DataConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """(vitkit fields from the HF config and preprocessor_config.json, {field: note} for each default used because
    neither stated it: `defaults` for the model, `family`'s published data config for the images)."""
    config = vision_config(meta)
    hints: dict[str, Any] = {}
    if "num_attention_heads" in config:
        hints["num_heads"] = config["num_attention_heads"]
    if "hidden_act" in config:
        act = config["hidden_act"]
        if act not in HF_ACTS:
            raise ValueError(f"hidden_act {act!r} in config.json has no vitkit equivalent ({', '.join(HF_ACTS)})")
        hints["act_layer"] = HF_ACTS[act]
    if "layer_norm_eps" in config:
        hints["norm_eps"] = config["layer_norm_eps"]
    if isinstance(config.get("image_size"), int | list):
        hints["img_size"] = config["image_size"]
    if "num_channels" in config:
        hints["in_chans"] = config["num_channels"]
    preprocess = meta.get("preprocessor") or {}
    for key in ("mean", "std"):
        if isinstance(preprocess.get(f"image_{key}"), list):
            hints[key] = tuple(preprocess[f"image_{key}"])
    hints.update(_framing(preprocess))
    assumed = {k: f"{v!r} (the HF default; no config.json)" for k, v in defaults.items() if k not in hints}
    hints = {**defaults, **hints}
    family.fill(hints, assumed)
    return hints, assumed


# PIL resampling codes in an HF preprocessor_config.json.
_RESAMPLE = {2: "bilinear", 3: "bicubic"}


def _framing(preprocess: dict[str, Any]) -> dict[str, Any]:
    """crop_pct and interpolation of an HF image processor: a processor that resizes straight to the model's size
    keeps the whole image (1.0); one that centre-crops `crop_size` from `size` (its shortest edge, or its height)
    keeps their ratio."""
    hints: dict[str, Any] = {}
    if preprocess.get("resample") in _RESAMPLE:
        hints["interpolation"] = _RESAMPLE[preprocess["resample"]]
    size, crop = preprocess.get("size"), preprocess.get("crop_size")
    if preprocess.get("do_center_crop") and isinstance(size, dict) and isinstance(crop, dict):
        edge, height = size.get("shortest_edge", size.get("height")), crop.get("height")
        if isinstance(edge, int) and isinstance(height, int) and 0 < height <= edge:
            hints["crop_pct"] = height / edge
    elif preprocess and not preprocess.get("do_center_crop"):
        hints["crop_pct"] = 1.0
    return hints
