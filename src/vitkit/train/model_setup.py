"""The model a training run trains: a registered config or a pretrained checkpoint, with the run's overrides."""

from __future__ import annotations

import logging

import torch.distributed as dist

from ..checkpoints import load_checkpoint, load_config
from ..checkpoints.tags import fetch_pretrained, pretrained_tag
from ..models import VisionTransformer, ViTConfig, build_model, get_config, parse_overrides
from .optim import freeze
from .options import TrainOptions

logger = logging.getLogger("vitkit.train")


def run_config(options: TrainOptions) -> ViTConfig:
    """The model config of a run: the registered or pretrained one, with the run's overrides."""
    tag = pretrained_tag(options.pretrained)
    if tag is not None:
        config = tag.config()
    else:
        config = load_config(options.pretrained) if options.pretrained is not None else get_config(options.model)
    changes: dict = {}
    if options.img_size is not None:
        changes["img_size"] = options.img_size
    if options.packing:
        changes.update(dynamic_img_size=True, dynamic_img_pad=True, token_drop=options.token_drop)
    if options.max_patches is not None:
        changes["max_patches"] = options.max_patches
    if options.drop_path is not None:
        changes["drop_path_rate"] = options.drop_path
    if options.crop_pct is not None:
        changes["crop_pct"] = options.crop_pct
    if options.interpolation is not None:
        changes["interpolation"] = options.interpolation
    return config.replace(**{**changes, **parse_overrides(options.overrides)})


def build_for_run(options: TrainOptions, config: ViTConfig, num_classes: int) -> VisionTransformer:
    """A model with `num_classes` outputs, in training mode, on the run's attention kernel; with --pretrained its
    weights are loaded (the position table resampled to the run's grid), except a head of another size, which is
    replaced (and logged: a wrong --data folder shows up as a class count the user did not expect)."""
    model = build_model(config.replace(num_classes=num_classes))
    if options.pretrained is not None:
        tag = pretrained_tag(options.pretrained)
        source, layout = (fetch_pretrained(tag), tag.layout) if tag else (options.pretrained, "auto")
        old_classes = tag.num_classes if tag else load_config(options.pretrained).num_classes
        other_head = old_classes != num_classes
        if other_head and (not dist.is_initialized() or dist.get_rank() == 0):
            logger.warning("--pretrained %s: %s; training a new %d-class head (the data has %d classes)",
                           options.pretrained, f"replacing its {old_classes}-class head" if old_classes else
                           "its weights have no classifier head (0 classes)", num_classes, num_classes)
        loaded = load_checkpoint(source, model=model, strict=False, skip="head" if other_head else (),
                                 source_format=layout)
        if loaded.report.missing:  # keys it has that the model lacks (another pooling, say) are left out
            raise ValueError(f"--pretrained {options.pretrained}: weights missing for "
                             f"{', '.join(loaded.report.missing[:8])}")
    model.set_attention(options.attention, deterministic=options.deterministic)
    if options.grad_checkpointing:
        model.set_grad_checkpointing(options.grad_checkpointing)
    freeze(model, list(options.freeze), linear_probe=options.linear_probe)
    return model.train()
