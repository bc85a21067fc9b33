"""What the Hugging Face vision configs share: reading a (possibly nested) config.json into vitkit fields."""

from __future__ import annotations

from typing import Any

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


def hf_hints(meta: dict[str, Any], defaults: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(vitkit fields from the HF config, {field: note} for each default used because there was no config)."""
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
    assumed = {k: f"{v!r} (the HF default; no config.json)" for k, v in defaults.items() if k not in hints}
    return {**defaults, **hints}, assumed
