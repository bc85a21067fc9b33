"""`convert_state_dict`: any supported foreign state dict -> (vitkit state dict, vitkit config), with a record of
the format, the keys dropped on purpose, and the config fields set by default rather than read."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..models import ViTConfig
from .detect import FORMATS, detect_format, get_format, strip_wrappers
from .infer import infer_vit_config
from .keymap import StateDict


@dataclass
class Conversion:
    """The result of `convert_state_dict`; unpacks as `state_dict, config = convert_state_dict(...)`."""

    state_dict: StateDict
    config: ViTConfig
    source_format: str
    dropped: list[str] = field(default_factory=list)
    assumed: dict[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.state_dict, self.config))


def convert_state_dict(
    state_dict: dict[str, torch.Tensor],
    source_format: str = "auto",
    *,
    meta: dict[str, Any] | None = None,
    config: ViTConfig | None = None,
    img_size: int | tuple[int, int] | None = None,
    source: str | None = None,
    **overrides: Any,
) -> Conversion:
    """Rename `state_dict` into vitkit's layout and infer the config it fits.

    `source_format`: 'auto' (detected from the keys) or a format name (see `vitkit.checkpoints.FORMATS`), as in
    `load_pretrained(source_format=...)`. `source`: the deprecated old name of `source_format`; it warns, and
    raises TypeError when source_format is given too.
    `meta`: what came with the weights: {'config': config.json, 'preprocessor': preprocessor_config.json,
    'open_clip': open_clip_config.json, 'timm_args': timm_args.json}, each optional.
    `overrides`: config fields to set (e.g. num_heads=12, act_layer='gelu', img_size=384, select_layer=-2);
    they win over what is inferred. `config`: use this config instead of inferring one (loading into a model
    you built). `img_size`: the image size when the weights fix none (SimpleViT, no learned position table);
    a learned table keeps its own size (`load_pretrained(img_size=...)` resamples it). Raises ValueError
    naming what is missing or does not fit.
    """
    if source is not None:
        if source_format != "auto":
            raise TypeError(f"convert_state_dict got source_format={source_format!r} and source={source!r}; pass "
                            "only source_format= (source= is its deprecated old name)")
        warnings.warn("convert_state_dict(source=...) is deprecated; pass source_format=... (the same layout "
                      "name, as load_pretrained takes it)", DeprecationWarning, stacklevel=2)
        source_format = source
    state_dict = strip_wrappers(dict(state_dict))
    detected = detect_format(state_dict)
    name = detected if source_format == "auto" else get_format(source_format).name
    if name is None:
        sample = ", ".join(sorted(state_dict)[:5]) or "no keys at all"
        raise ValueError(f"unrecognised checkpoint layout (keys: {sample}, ...); pass source_format= one of "
                         f"{', '.join(FORMATS)}")
    try:
        renamed = FORMATS[name].convert(state_dict, meta or {})
        if config is None:
            for field_name, why in renamed.required.items():
                if field_name not in overrides:
                    raise ValueError(f"cannot infer {field_name} from the weights: {why}; pass {field_name}=...")
            config = infer_vit_config(renamed, overrides, img_size)
    except (ValueError, KeyError, IndexError, TypeError) as err:
        if detected and detected != name:
            raise ValueError(f"not a {name} checkpoint ({err}); its keys look like {detected} "
                             f"({FORMATS[detected].description}): pass source_format='{detected}' or 'auto'") from err
        raise ValueError(f"{name} checkpoint does not convert: {err}") from err
    assumed = {k: v for k, v in renamed.assumed.items() if k not in overrides}
    return Conversion(renamed.state_dict, config, name, renamed.dropped, assumed)
