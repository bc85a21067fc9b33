"""Loading any supported checkpoint into a vitkit model with one key report, and saving vitkit's own directory
(config.json, enough to rebuild the model, + model.safetensors)."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import warnings
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import models
from ..attention import AttentionChoice
from ..layers import EfficientAttention
from ..models import VisionTransformer, ViTConfig, attention_argument, build_model, config_from_dict, saved_attention
from ..runtime import write_text
from .convert import Conversion, convert_state_dict
from .io import save_state_dict
from .keymap import rename
from .sources import read_source
from .tags import fetch_pretrained, get_pretrained, pretrained_tag

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
logger = logging.getLogger("vitkit.checkpoints")


def save_pretrained(model: nn.Module, directory: str | os.PathLike, *,
                    state_dict: dict[str, torch.Tensor] | None = None, training: dict[str, Any] | None = None) -> Path:
    """Write `model` as a vitkit directory; each file is written to a temporary name and renamed.

    `state_dict` replaces the model's own, e.g. the gathered full weights of a sharded (FSDP) model. `training`
    is stored under config.json's "training" key (where the weights came from); loading ignores it.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_json"):
        raise TypeError(f"save_pretrained needs a vitkit model with a .config, got {type(model).__name__}")
    directory = Path(directory)
    save_state_dict(model.state_dict() if state_dict is None else state_dict, directory / WEIGHTS_NAME)
    data = config.to_dict() | ({"training": training} if training else {})  # the kernel is not saved: run-time
    write_text(directory / CONFIG_NAME, json.dumps(data, indent=2) + "\n")
    return directory


def read_config(directory: Path) -> dict:
    """The config.json of a vitkit directory, as a dict; ValueError naming the file when it is not vitkit's (an
    HF-style config.json has no 'family')."""
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {CONFIG_NAME}; is it a vitkit model directory?")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(config, dict) or "family" not in config:
        raise ValueError(f"{path} is not a vitkit config.json (it has no 'family'); make a vitkit model directory "
                         f"from it first: `vitkit convert {directory} OUT_DIR`")
    return config


def load_config(directory: str | os.PathLike) -> ViTConfig:
    """The model config of a vitkit model (or run) directory, without loading its weights."""
    return config_from_dict(read_config(Path(directory)))


@dataclass
class KeyReport:
    """Every way a state dict and a model disagree, plus the keys a converter left out on purpose."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        parts = [
            f"{len(items)} {label}: {', '.join(items[:limit])}{' ...' if len(items) > limit else ''}"
            for label, items in (("missing", self.missing), ("unexpected", self.unexpected),
                                 ("mismatched", self.mismatched))
            if items
        ]
        return "; ".join(parts) or "all keys matched"


def key_report(model: nn.Module, state_dict: dict[str, torch.Tensor], keep: Collection[str] = ()) -> KeyReport:
    """Missing, unexpected and shape-mismatched keys of `state_dict` against `model`; the model's keys in `keep`
    keep their own values and are not missing."""
    own = model.state_dict()
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if own[k].shape != state_dict[k].shape
    )
    return KeyReport(sorted(set(own) - set(state_dict) - set(keep)), sorted(set(state_dict) - set(own)), mismatched)


def check_floating(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """ValueError naming the first tensors of `state_dict` that are not floating point (integers, bools) where
    `model` holds floating point ones: `load_state_dict` would silently cast them into the weights."""
    own = model.state_dict()
    wrong = [f"{key} is {str(tensor.dtype).removeprefix('torch.')}" for key, tensor in state_dict.items()
             if key in own and own[key].is_floating_point() and not tensor.is_floating_point()]
    if wrong:
        more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
        raise ValueError(f"{source}: {', '.join(wrong[:3])}{more}; weights must be floating point, so this file "
                         "is not a checkpoint of trained weights (or was written wrong): re-save the model's "
                         "float tensors")


def load_state_dict_checked(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str,
                            strict: bool = True, keep: Collection[str] = ()) -> KeyReport:
    """Load with one report of missing / unexpected / mismatched keys; `strict` raises on any, and a shape
    mismatch or an integer tensor for a floating one always raises (the tensor cannot be loaded). Zero qkv
    biases of a bias-free model are dropped (`EfficientAttention.drop_zero_qkv_bias`) and listed in the report.
    The model's keys in `keep` keep their values."""
    check_floating(model, state_dict, source)
    state_dict = dict(state_dict)
    zero_biases = [key for name, module in model.named_modules() if isinstance(module, EfficientAttention)
                   if (key := module.drop_zero_qkv_bias(state_dict, f"{name}."))]
    report = key_report(model, state_dict, keep)
    if zero_biases:
        report.dropped.append(f"{len(zero_biases)} all-zero qkv biases (the model has qkv_bias=False)")
    if report.mismatched or (strict and not report.clean):
        raise ValueError(f"weights in {source} do not fit the model: {report.summary()}; check that the checkpoint "
                         "is for this model (without model=, vitkit builds the model the checkpoint describes), or "
                         "pass strict=False to skip missing and unexpected keys")
    model.load_state_dict(state_dict, strict=False)
    return report


@dataclass
class Loaded:
    """What `load_checkpoint` did: the model, the detected format and the conversion record, the key report."""

    model: nn.Module
    source_format: str
    report: KeyReport
    assumed: dict[str, str] = field(default_factory=dict)


def fit_pos_embed(state_dict: dict[str, torch.Tensor], model: nn.Module, old_grid: tuple[int, int] | None) -> None:
    """Fit the checkpoint's learned table of `old_grid` to the model's grid (`VisionTransformer.resample_pos_embed`).
    `old_grid` None (the checkpoint states none): a table of the model's shape is taken as is, another as square."""
    pos, own = state_dict.get("pos_embed"), getattr(model, "pos_embed", None)
    if pos is None or not isinstance(own, nn.Parameter) or not isinstance(model, VisionTransformer):
        return
    if old_grid is None and pos.shape == own.shape:
        return
    try:
        state_dict["pos_embed"] = model.resample_pos_embed(pos, old_grid)
    except ValueError:
        return  # not a table of that grid: the key report names the mismatch


def upgrade_vitkit_weights(config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights of a vitkit directory with this `config.json` in today's layout. A SimpleViT written before
    SimpleViT became a VisionTransformer configuration (family 'simple_vit') kept a pooled head norm as `norm`."""
    if config.get("family") == "simple_vit" and config.get("head_norm") == "pooled":
        return rename(state_dict, [(r"^norm\.", "fc_norm.")])
    return state_dict


def _drop_cut_blocks(state_dict: dict[str, torch.Tensor], model: nn.Module, dropped: list[str]) -> dict:
    """Without the blocks `select_layer` leaves out of the model (DeepSeek-VL2 builds them neither)."""
    config = model.config
    if not isinstance(config, ViTConfig) or config.num_blocks == config.depth:
        return state_dict
    cut = [k for k in state_dict if k.startswith("blocks.") and int(k.split(".")[1]) >= config.num_blocks]
    if cut:
        dropped.append(f"{len(cut)} keys of blocks {config.num_blocks}..{config.depth - 1} "
                       f"(select_layer={config.select_layer} keeps {config.num_blocks})")
    return {k: v for k, v in state_dict.items() if k not in cut}


def _skipped(keys: Iterable[str], skip: tuple[str, ...]) -> set[str]:
    """The keys a `skip` pattern names: a glob ('head.*', 'blocks.1[01].*') or a module name ('head')."""
    return {k for k in keys if any(fnmatch.fnmatchcase(k, p) or k.startswith(f"{p}.") for p in skip)}


def _skip_patterns(skip: str | Iterable[str]) -> tuple[str, ...]:
    patterns = (skip,) if isinstance(skip, str) else tuple(skip)
    if not all(isinstance(p, str) and p for p in patterns):
        raise TypeError(f"skip must be key patterns (strings like 'head.*' or 'head'), got {skip!r}")
    return patterns


def _prefer_saved(model: VisionTransformer, data: dict[str, Any], label: str) -> None:
    """The kernel a config.json written before vitkit 0.3 names, as the model's preference: where it cannot run on
    the device and dtype the model was loaded on, 'auto' instead, with one logged line; where it can, a preference
    that gives way to 'auto' (logged once) for a call it cannot run."""
    backend, deterministic = saved_attention(data)
    if backend is None and not deterministic:
        return
    choice = AttentionChoice(backend or "auto", deterministic, fallback=True)
    weight = next(model.parameters())
    why = choice.reason_here(weight.device, weight.dtype, model.blocks[0].attn.head_dim)
    if why is not None:
        logger.warning("%s: its config.json names attention '%s', which cannot run here (it %s); running 'auto'",
                       label, choice.backend, why)
        choice = AttentionChoice("auto", deterministic)
    model.set_attention(choice.backend, deterministic=deterministic, fallback=choice.fallback)


def load_checkpoint(
    source: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    source_format: str = "auto",
    strict: bool = True,
    img_size: int | tuple[int, int] | None = None,
    trust_pickle: bool = False,
    attention: str | None = None,
    deterministic: bool | None = None,
    skip: str | Iterable[str] = (),
    **overrides: Any,
) -> Loaded:
    """`load_pretrained` (whose docstring explains every argument) with its record: format, key report, and the
    config fields set by default."""
    attention = attention_argument(attention, overrides)
    skip = _skip_patterns(skip)
    tag = pretrained_tag(source) if model is None else None
    if tag is not None:  # published weights by name: the tag's model, with the caller's changes, and its files
        settings = {**tag.config_changes(), **overrides, **({"img_size": img_size} if img_size else {})}
        model = models.create_model(tag.model, **settings)
        if settings["num_classes"] != tag.num_classes:
            skip = (*skip, "head")
        source, source_format, overrides, img_size = fetch_pretrained(tag), tag.layout, {}, None
    src = read_source(source, trust_pickle=trust_pickle)
    conversion: Conversion | None = None
    if src.vitkit_config is not None and source_format in ("auto", "vitkit"):
        config = config_from_dict(src.vitkit_config)
        old_grid: tuple[int, int] | None = config.grid_size  # the grid of its table, stated by the directory
        config = config.replace(**overrides) if overrides else config
        state_dict, fmt = upgrade_vitkit_weights(src.vitkit_config, src.state_dict), "vitkit"
    else:
        given = getattr(model, "config", None) if model is not None else None
        try:
            conversion = convert_state_dict(src.state_dict, source_format, meta=src.meta, config=given,
                                            img_size=img_size, **overrides)
        except ValueError as err:
            raise ValueError(f"{src.label}: {err}") from err
        state_dict, config, fmt = conversion.state_dict, conversion.config, conversion.source_format
        old_grid = config.grid_size if model is None else None  # inferred from these weights, or unknown
    built = model is None
    if built:
        if img_size is not None:
            config = config.replace(img_size=img_size)
        model = build_model(config.replace(weight_init="skip" if not skip else config.weight_init))
        model.config = config  # every tensor but the skipped ones is overwritten below: init skipped then
    elif img_size is not None:
        raise ValueError("img_size applies when vitkit builds the model; build yours at that size instead")
    fit_pos_embed(state_dict, model, old_grid)
    dropped = list(conversion.dropped) if conversion else []
    state_dict = _drop_cut_blocks(state_dict, model, dropped)
    kept = _skipped(model.state_dict(), skip)
    if skip:
        skipped = _skipped(state_dict, skip)
        state_dict = {k: v for k, v in state_dict.items() if k not in skipped}
        dropped.append(f"{len(skipped)} keys matching {', '.join(skip)} (skip=): the model keeps its own "
                       f"{len(kept)}")
    report = load_state_dict_checked(model, state_dict, src.label, strict=strict, keep=kept)
    if not report.clean:
        warnings.warn(f"loaded {src.label} with {report.summary()}", stacklevel=3)
    report.dropped = dropped + report.dropped
    if attention is not None or deterministic is not None:
        model.set_attention(attention or "auto", deterministic=deterministic)
    elif built and src.vitkit_config is not None:
        _prefer_saved(model, src.vitkit_config, src.label)
    return Loaded(model.eval(), fmt, report, conversion.assumed if conversion else {})


def load_pretrained(source: str | os.PathLike, **options: Any) -> nn.Module:
    """A vitkit model with the weights of `source`, in eval mode (`load_checkpoint` with the record).

    `source`: a vitkit directory; a weights file (.safetensors, .pt/.pth/.bin read with weights_only=True, or a
    big_vision / vision_transformer JAX .npz; JSON files beside it are read too); an HF-style directory
    (config.json + model.safetensors or pytorch_model.bin, sharded or not; OpenCLIP's open_clip_config.json);
    or `hf-hub:org/name[@rev]`; or published weights by name, `NAME.TAG` (`vitkit.list_pretrained()`; a NAME alone:
    its default tag), fetched into the Hugging Face cache. Keyword options:
    `source_format`: 'auto' (from the keys) or a name from `vitkit.checkpoints.FORMATS`.
    `model`: load into this model instead of building one from the inferred config.
    `strict` (True): raise with the key report (missing / unexpected / shape-mismatched keys) unless it is clean.
    `img_size`: build at this size; the learned position table is resampled (bicubic, prefix tokens kept).
    `trust_pickle` (False): also load .pt/.pth/.bin pickles that need more than tensors (custom classes, whole
    modules). Unpickling those runs code from the file, so the default refuses them; set it only for files you
    trust.
    `attention` / `deterministic`: the kernel choice (`VisionTransformer.set_attention`). The kernel is chosen where
    the model runs, so by default the model runs 'auto' (or, with `model=`, keeps that model's choice); a
    config.json from before vitkit 0.3 that names one is taken as a preference, 'auto' where it cannot run.
    `skip`: checkpoint keys to leave out, as globs or module names (`skip="head"` for a head of another size): the
    model keeps its own values for them and they do not count as missing.
    Any other keyword is a config field the weights cannot show or you want changed (num_heads=12,
    act_layer='gelu', select_layer=-2, ignore_head=True, dynamic_img_size=True, ...).
    """
    return load_checkpoint(source, **options).model


def create_model(name: str, *, pretrained: bool | str | os.PathLike | None = None, trust_pickle: bool = False,
                 attention: str | None = None, deterministic: bool | None = None, **overrides: Any) -> nn.Module:
    """A registered model (`vitkit.list_models()`) with config fields overridden, e.g. `num_classes=10`, running
    attention on `attention` ('auto' by default; see `VisionTransformer.set_attention`).

    `name` may carry a tag, `NAME.TAG` (`vitkit.list_pretrained()`): the model then has the settings of those
    published weights (classes, data config). `pretrained=True` downloads them (a name without a tag: its default
    tag) into the Hugging Face cache, or takes them from there offline, and loads them; `pretrained=PATH` loads a
    checkpoint with `load_pretrained(PATH, model=..., trust_pickle=...)`. Either way the model comes in eval mode;
    without weights it is freshly initialised, in training mode as any new nn.Module.
    """
    tag = get_pretrained(name) if pretrained is True or "." in name else None
    if pretrained is not None and not isinstance(pretrained, bool | str | os.PathLike):
        raise TypeError(f"pretrained must be True (published weights), False, or a checkpoint path; got "
                        f"{type(pretrained).__name__}")
    settings = {**tag.config_changes(), **overrides} if tag is not None else overrides
    model = models.create_model(tag.model if tag is not None else name,
                                attention=attention_argument(attention, settings), deterministic=deterministic,
                                **settings)
    if pretrained is True:  # a classifier of another size than the weights' starts fresh, as in timm
        other_head = settings.get("num_classes", tag.num_classes) != tag.num_classes
        load_pretrained(fetch_pretrained(tag), model=model, source_format=tag.layout,
                        skip="head" if other_head else ())
    elif pretrained not in (None, False):
        load_pretrained(pretrained, model=model, trust_pickle=trust_pickle)
    return model
