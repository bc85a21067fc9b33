"""The model a training run trains: a registered config or a pretrained checkpoint, with the run's overrides."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from torch import nn

from ..checkpoints import read_state_dict
from ..checkpoints.pretrained import WEIGHTS_NAME, load_state_dict_checked, read_config
from ..layers import resample_abs_pos_embed
from ..models import build_model, config_from_dict, get_config
from ..models.config import SimpleViTConfig, ViTConfig
from .options import TrainOptions


def run_config(options: TrainOptions) -> ViTConfig | SimpleViTConfig:
    """The model config of a run: the registered or pretrained one, with the run's overrides."""
    if options.pretrained is not None:
        config = config_from_dict(read_config(Path(options.pretrained)))
    else:
        config = get_config(options.model)
    names = {f.name for f in fields(config)}
    changes: dict = {"attention_type": options.attention} if options.attention != "auto" else {}
    if options.img_size is not None:
        changes["img_size" if "img_size" in names else "image_size"] = options.img_size
    if "deterministic" in names:
        changes["deterministic"] = options.deterministic
    if options.packing:
        if not isinstance(config, ViTConfig):
            raise ValueError(f"--packing needs a VisionTransformer model; {options.model} is a {config.family} model")
        changes.update(dynamic_img_size=True, dynamic_img_pad=True, token_drop=options.token_drop)
    if options.drop_path is not None:
        if "drop_path_rate" not in names:
            raise ValueError(f"--drop-path: this model ({config.family}) has no stochastic depth")
        changes["drop_path_rate"] = options.drop_path
    return config.replace(**changes) if changes else config


def build_for_run(options: TrainOptions, config: ViTConfig | SimpleViTConfig, num_classes: int) -> nn.Module:
    """A model with `num_classes` outputs; with --pretrained its weights are loaded except a head of another size."""
    model = build_model(config.replace(num_classes=num_classes))
    if options.pretrained is not None:
        _load_backbone(model, Path(options.pretrained))
    if options.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ValueError(f"--grad-checkpointing: {type(model).__name__} does not support it")
        model.set_grad_checkpointing(options.grad_checkpointing)
    return model


def _load_backbone(model: nn.Module, directory: Path) -> None:
    """Pretrained weights into `model`: a head of another size stays fresh, position tables are resampled."""
    state = read_state_dict(directory / WEIGHTS_NAME)
    own = model.state_dict()
    head = {k for k in state if k.startswith("head.") and (k not in own or own[k].shape != state[k].shape)}
    for key in head:
        del state[key]
    pos = state.get("pos_embed")
    if pos is not None and "pos_embed" in own and pos.shape != own["pos_embed"].shape:
        prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        old = int((pos.shape[1] - prefix) ** 0.5)
        state["pos_embed"] = resample_abs_pos_embed(pos, model.patch_embed.grid_size, (old, old), prefix)
    load_state_dict_checked(model, state, str(directory), strict=False)
    missing = set(own) - set(state) - {k for k in own if k.startswith("head.")}
    if missing:
        raise ValueError(f"--pretrained {directory}: weights missing for {', '.join(sorted(missing)[:8])}")
