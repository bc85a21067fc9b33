"""The model a training run trains: a registered config or a pretrained checkpoint, with the run's overrides."""

from __future__ import annotations

from pathlib import Path

from ..checkpoints import read_state_dict
from ..checkpoints.pretrained import (
    WEIGHTS_NAME,
    fit_pos_embed,
    load_state_dict_checked,
    read_config,
    upgrade_vitkit_weights,
)
from ..models import VisionTransformer, ViTConfig, build_model, config_from_dict, get_config, parse_overrides
from .optim import freeze
from .options import TrainOptions


def run_config(options: TrainOptions) -> ViTConfig:
    """The model config of a run: the registered or pretrained one, with the run's overrides."""
    if options.pretrained is not None:
        config = config_from_dict(read_config(Path(options.pretrained)))
    else:
        config = get_config(options.model)
    changes: dict = {"deterministic": options.deterministic}
    if options.attention != "auto":
        changes["attention_type"] = options.attention
    if options.img_size is not None:
        changes["img_size"] = options.img_size
    if options.packing:
        changes.update(dynamic_img_size=True, dynamic_img_pad=True, token_drop=options.token_drop)
    if options.drop_path is not None:
        changes["drop_path_rate"] = options.drop_path
    if options.crop_pct is not None:
        changes["crop_pct"] = options.crop_pct
    if options.interpolation is not None:
        changes["interpolation"] = options.interpolation
    return config.replace(**{**changes, **parse_overrides(options.overrides)})


def build_for_run(options: TrainOptions, config: ViTConfig, num_classes: int) -> VisionTransformer:
    """A model with `num_classes` outputs; with --pretrained its weights are loaded except a head of another size."""
    model = build_model(config.replace(num_classes=num_classes))
    if options.pretrained is not None:
        _load_backbone(model, Path(options.pretrained))
    if options.grad_checkpointing:
        model.set_grad_checkpointing(options.grad_checkpointing)
    freeze(model, list(options.freeze), linear_probe=options.linear_probe)
    return model


def _load_backbone(model: VisionTransformer, directory: Path) -> None:
    """Pretrained weights into `model`: a head of another size stays fresh, the position table is resampled from
    the checkpoint's grid (its config.json says which) to the model's."""
    stated = read_config(directory)
    state = upgrade_vitkit_weights(stated, read_state_dict(directory / WEIGHTS_NAME))
    own = model.state_dict()
    head = {k for k in state if k.startswith("head.") and (k not in own or own[k].shape != state[k].shape)}
    for key in head:
        del state[key]
    fit_pos_embed(state, model, config_from_dict(stated).grid_size)
    load_state_dict_checked(model, state, str(directory), strict=False)
    missing = set(own) - set(state) - {k for k in own if k.startswith("head.")}
    if missing:
        raise ValueError(f"--pretrained {directory}: weights missing for {', '.join(sorted(missing)[:8])}")
