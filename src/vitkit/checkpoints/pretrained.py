"""vitkit's own checkpoint: a directory of config.json (enough to rebuild the model) + model.safetensors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ..models import build_model, config_from_dict
from .io import read_state_dict, save_state_dict, write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(model: nn.Module, directory: str | os.PathLike, *,
                    state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `model` as a vitkit directory; each file is written to a temporary name and renamed.

    `state_dict` replaces the model's own, e.g. the gathered full weights of a sharded (FSDP) model.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_json"):
        raise TypeError(f"save_pretrained needs a vitkit model with a .config, got {type(model).__name__}")
    directory = Path(directory)
    save_state_dict(model.state_dict() if state_dict is None else state_dict, directory / WEIGHTS_NAME)
    write_text(directory / CONFIG_NAME, config.to_json() + "\n")
    return directory


def read_config(directory: Path) -> dict:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}; is it a vitkit model directory?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def key_report(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> tuple[list, list, list]:
    """(missing, unexpected, shape-mismatched) keys of `state_dict` against `model`."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if own[k].shape != state_dict[k].shape
    )
    return missing, unexpected, mismatched


def load_state_dict_checked(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str,
                            strict: bool = True) -> None:
    """Load with one report of missing / unexpected / mismatched keys; `strict` raises on any."""
    missing, unexpected, mismatched = key_report(model, state_dict)
    if mismatched or (strict and (missing or unexpected)):
        parts = [
            f"{len(items)} {label}: {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched))
            if items
        ]
        raise ValueError(f"weights in {source} do not fit the model: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=False)


def load_pretrained(source: str | os.PathLike, *, model: nn.Module | None = None, strict: bool = True) -> nn.Module:
    """Load a vitkit directory (config.json + model.safetensors), or a weights file into `model`.

    A weights file (.safetensors, or .pt/.pth/.bin read with weights_only=True) carries no config,
    so it needs `model`. Returns the model, in eval mode.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        config = read_config(path)
        weights = path / WEIGHTS_NAME
        if model is None:
            model = build_model(config_from_dict(config))
        state_dict = read_state_dict(weights)
    else:
        if model is None:
            raise ValueError(
                f"{path} is a bare weights file with no config; pass model=vitkit.create_model(...) "
                "to load it into, or point at a vitkit directory"
            )
        state_dict = read_state_dict(path)
    load_state_dict_checked(model, state_dict, str(path), strict=strict)
    return model.eval()
