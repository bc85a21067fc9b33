"""Model configs: one frozen dataclass per family, validated on creation and stored as config.json."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ..layers import POOL_TYPES, ROPE_NAMES, activation_name, mlp_layer_name, norm_name, to_2tuple

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)
WEIGHT_INITS = ("", "jax", "skip")
POS_EMBEDS = ("learn", "sincos", "none")
PATCH_EMBEDS = ("conv", "norm_linear_norm")
INTERPOLATIONS = ("bicubic", "bilinear")
# config.json keys that are not fields: which family reads it, and where trained weights came from.
METADATA = ("family", "training")
# Keys that config.json files written before vitkit 0.3 carry for the attention kernel (and the 'simple_vit'
# family's 'use_flash'): run-time state, read by the loader as a preference (`saved_attention`), never fields.
RUNTIME_KEYS = ("attention_type", "deterministic")


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _rate(name: str, value: object) -> None:
    if value is not None and not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")


# Fields given as a name or a layer class (nn.GELU, nn.LayerNorm, ...): checked by the layer-name resolvers.
_LAYER_FIELDS = ("norm_layer", "act_layer", "mlp_layer")
_TYPE_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "None": lambda v: v is None,
}


def _type_matches(kind: str, value: object) -> bool:
    if kind.startswith("tuple["):
        return isinstance(value, tuple | list)  # their contents are checked by the field's own rule
    return _TYPE_CHECKS[kind](value)


def _check_types(config: _Config) -> None:
    """ValueError naming the first field whose value is not of its declared type (a bool is no number here,
    and numbers must be finite), before any rule compares values."""
    for f in fields(config):
        if f.name in _LAYER_FIELDS:
            continue
        value = getattr(config, f.name)
        kinds = [kind.strip() for kind in str(f.type).split("|")]
        if not any(_type_matches(kind, value) for kind in kinds):
            raise ValueError(f"{f.name} must be {' or '.join(kinds)}, got {value!r} ({type(value).__name__})")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{f.name} must be a finite number, got {value!r}")


def _check_mean_std(config: _Config) -> None:
    for name in ("mean", "std"):
        values = getattr(config, name)
        if not values or not all(_TYPE_CHECKS["float"](v) and math.isfinite(v) for v in values):
            raise ValueError(f"{name} must be a non-empty list of finite numbers (one per channel), got {values!r}")
        object.__setattr__(config, name, tuple(values))
    if any(s <= 0 for s in config.std):
        raise ValueError(f"std must be > 0 for every channel (inputs are divided by it), got {config.std!r}")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class _Config:
    """JSON round-trip and copy-with-changes shared by every family's config."""

    family: ClassVar[str]
    # What config.json must state: the fields that fix the tensor shapes. The rest default when absent, so a
    # config.json written before a field existed still loads.
    required: ClassVar[tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **{f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Config:
        if not isinstance(data, dict):
            raise ValueError(f"a {cls.__name__} is built from a dict of its fields, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if k not in METADATA and k not in RUNTIME_KEYS}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"config has fields {cls.__name__} does not know: {', '.join(unknown)}; "
                "remove them or upgrade vitkit"
            )
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**data)

    def replace(self, **changes: Any) -> _Config:
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        runtime = [name for name in unknown if name in RUNTIME_KEYS]
        if runtime:
            raise ValueError(f"{', '.join(runtime)} is not part of a model config: the attention kernel is chosen "
                             "where the model runs; pass attention= to create_model / load_pretrained, or call "
                             "model.set_attention(name, deterministic=...)")
        if unknown:
            raise ValueError(f"{type(self).__name__} has no argument(s) {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ViTConfig(_Config):
    """Every knob of `VisionTransformer`: seed 000's arguments plus what timm/SigLIP/CLIP/DINOv2 need.

    `drop_rate` keeps the seed's meaning (dropout after the position embedding and inside blocks);
    `head_drop_rate` is timm's classifier dropout. `pre_norm` chooses pre- vs post-norm blocks;
    `norm_pre` is CLIP's extra norm before the blocks. `select_layer` keeps blocks as DeepSeek-VL2
    does (-1 all, -2 all but the last, k > 0 the first k). `head_dim` decouples the attention width
    from `embed_dim` (vit-pytorch's `dim_head`); `mlp_hidden_dim` sets the MLP width exactly, overriding
    `mlp_ratio` (vit-pytorch's `mlp_dim`). `pos_embed_interpolation` and `pos_embed_antialias` pick how a learned
    table is resampled for another grid: bicubic with antialias as timm, without as HF's `interpolate_pos_encoding`,
    bilinear with antialias as SigLIP2's NaFlex towers.
    `patch_embed='norm_linear_norm'` is vit-pytorch's LayerNorm -> Linear -> LayerNorm patch projection.
    `check_finite=True` makes the forward pass reject images holding NaN or Inf (one reduction over the input).
    `token_drop` is NaViT's rate of patch tokens dropped per image in packed training (`forward_packed`).
    `mean`, `std`, `crop_pct` and `interpolation` say how its input images are prepared, as timm's pretrained_cfg:
    evaluation resizes the shorter side to img_size / crop_pct and takes the centre crop. `max_patches` is a NaFlex
    patch budget: packed inputs are resized, keeping their aspect ratio, to the largest grid of at most that many
    patches (SigLIP2's rule, `vitkit.data.naflex_size`) instead of capping the longer side at img_size.
    `min_pixels` / `max_pixels` are Qwen-VL's sizing rule instead (`vitkit.data.smart_resize`): sides rounded to
    multiples of patch x merge_size, the pixel count kept between the two.
    `temporal_patch_size` > 1 embeds patches of that many frames with one 3D convolution (Qwen-VL: a still image is
    that many equal frames; a clip of T frames gives T / temporal_patch_size token grids). `window_size` (in patches)
    makes every block but `full_attention_blocks` attend within square windows of the grid (Qwen2.5-VL).
    `pos_embed_align_corners` resamples the learned table with corners aligned (Qwen3-VL). `merge_dim` adds a patch
    merger: each `merge_size` x `merge_size` group of final tokens becomes one token `merge_dim` wide (the tokens a
    language model receives); `deepstack` names blocks whose tokens each get their own merger too (Qwen3-VL).
    `rope` names a 2D rotary position embedding (`vitkit.layers.ROPES`: 'dinov3', 'eva02', 'mixed'; beside or
    instead of `pos_embed`): `rope_theta` its base (None: the variant's), `rope_grid` EVA-02's reference grid,
    `rope_offset` added to cell positions, `rope_indexing` 'ij' (row first) or 'xy', `rope_shift` / `rope_jitter` /
    `rope_rescale` DINOv3's training-time coordinate augmentations. `key_bias=False` keeps the key part of the qkv
    bias at zero (DINOv3, EVA-02); `mlp_norm` normalises the MLP's hidden features before fc2 (EVA-02's sub-LN).

    The defaults are seed 000's, so `VisionTransformer(**seed_kwargs)` is seed 000's model: `nn.LayerNorm` (eps
    1e-5) and exact GELU. Registered names set the values of the library they are named after (timm: eps 1e-6).
    """

    family: ClassVar[str] = "vit"
    required: ClassVar[tuple[str, ...]] = (
        "img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads",
    )

    img_size: int | tuple[int, int] = 224
    patch_size: int | tuple[int, int] = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    head_dim: int | None = None
    mlp_ratio: float = 4.0
    mlp_hidden_dim: int | None = None
    qkv_bias: bool = True
    key_bias: bool = True
    qk_norm: bool = False
    proj_bias: bool = True
    drop_rate: float = 0.0
    pos_drop_rate: float | None = None
    proj_drop_rate: float | None = None
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    head_drop_rate: float = 0.0
    weight_init: str = ""
    norm_layer: str = "layernorm"
    norm_eps: float = 1e-5
    act_layer: str = "gelu"
    mlp_layer: str = "mlp"
    mlp_norm: bool = False
    pre_norm: bool = True
    num_recomputing_layers: int = 0
    global_pool: str = "token"
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False
    pos_embed: str = "learn"
    pos_embed_antialias: bool = True
    pos_embed_interpolation: str = "bicubic"
    rope: str = "none"
    rope_theta: float | None = None
    rope_grid: tuple[int, int] | None = None
    rope_offset: float = 0.0
    rope_indexing: str = "ij"
    rope_shift: float | None = None
    rope_jitter: float | None = None
    rope_rescale: float | None = None
    patch_embed: str = "conv"
    dynamic_img_size: bool = False
    dynamic_img_pad: bool = False
    token_drop: float = 0.0
    crop_remainder: bool = False
    init_values: float | None = None
    fc_norm: bool | None = None
    norm_pre: bool = False
    final_norm: bool = True
    patch_bias: bool | None = None
    select_layer: int = -1
    ignore_head: bool = False
    check_finite: bool = False
    mean: tuple[float, float, float] = HALF_MEAN
    std: tuple[float, float, float] = HALF_STD
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    max_patches: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    temporal_patch_size: int = 1
    window_size: int | None = None
    full_attention_blocks: tuple[int, ...] = ()
    pos_embed_align_corners: bool = False
    merge_size: int = 1
    merge_dim: int | None = None
    deepstack: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place once, here
        _check_types(self)
        _check_mean_std(self)
        set_(self, "img_size", to_2tuple(self.img_size, "img_size"))
        set_(self, "patch_size", to_2tuple(self.patch_size, "patch_size"))
        for name in ("in_chans", "embed_dim", "depth", "num_heads"):
            _positive_int(name, getattr(self, name))
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0 = no classifier), got {self.num_classes!r}")
        if self.head_dim is not None:
            _positive_int("head_dim", self.head_dim)
        elif self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads}); pick num_heads "
                "dividing embed_dim, or set head_dim to decouple the attention width"
            )
        divisible = not any(i % p for i, p in zip(self.img_size, self.patch_size, strict=True))
        if not (divisible or self.dynamic_img_pad or self.crop_remainder):
            raise ValueError(
                f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}; pick a multiple "
                "of the patch size, or set dynamic_img_pad=True (pad) or crop_remainder=True (as timm)"
            )
        if self.mlp_hidden_dim is not None:
            _positive_int("mlp_hidden_dim", self.mlp_hidden_dim)
        elif self.mlp_ratio <= 0 or int(self.embed_dim * self.mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio must give an MLP width int(embed_dim * mlp_ratio) >= 1, got {self.mlp_ratio}")
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1] (the share of the resized image evaluation keeps), "
                             f"got {self.crop_pct}")
        for name in ("interpolation", "pos_embed_interpolation"):
            if getattr(self, name) not in INTERPOLATIONS:
                raise ValueError(f"{name} must be one of {', '.join(INTERPOLATIONS)}, got {getattr(self, name)!r}")
        if self.max_patches is not None:
            _positive_int("max_patches", self.max_patches)
        for name in ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate",
                     "head_drop_rate", "token_drop"):
            _rate(name, getattr(self, name))
        if self.weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {self.weight_init!r}")
        name, eps = norm_name(self.norm_layer)
        set_(self, "norm_layer", name)
        if eps is not None:
            set_(self, "norm_eps", eps)
        set_(self, "act_layer", activation_name(self.act_layer))
        set_(self, "mlp_layer", mlp_layer_name(self.mlp_layer))
        if self.mlp_layer == "swiglu_packed" and self.mlp_width % 2:
            raise ValueError(
                f"mlp_layer='swiglu_packed' splits its hidden width in half (gate + value), so the MLP width "
                f"(mlp_hidden_dim, or int(embed_dim * mlp_ratio)) = {self.mlp_width} must be even; change mlp_ratio"
            )
        if self.global_pool not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool='token' needs class_token=True; use 'avg' or 'map' without one")
        if self.global_pool == "map" and self.embed_dim % self.num_heads:
            raise ValueError(
                f"global_pool='map' splits embed_dim ({self.embed_dim}) over num_heads ({self.num_heads}); "
                "pick num_heads dividing embed_dim"
            )
        if self.reg_tokens < 0:
            raise ValueError(f"reg_tokens must be an integer >= 0, got {self.reg_tokens!r}")
        if self.pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {POS_EMBEDS}, got {self.pos_embed!r}")
        if self.patch_embed not in PATCH_EMBEDS:
            raise ValueError(f"patch_embed must be one of {PATCH_EMBEDS}, got {self.patch_embed!r}")
        self._check_rope()
        self._check_tower()
        if self.pos_embed == "sincos" and self.embed_dim % 4:
            raise ValueError(f"pos_embed='sincos' needs embed_dim divisible by 4, got {self.embed_dim}")
        if self.init_values is not None and self.init_values <= 0:
            raise ValueError(f"init_values (LayerScale) must be > 0 or None, got {self.init_values}")
        if self.num_recomputing_layers < 0:
            raise ValueError(
                f"num_recomputing_layers must be an integer >= 0, got {self.num_recomputing_layers!r}"
            )
        if self.select_layer == 0 or self.num_blocks < 1:
            raise ValueError(
                f"select_layer must be -1 (all {self.depth} blocks), -k (drop the last k-1) or k > 0 "
                f"(keep the first k); got {self.select_layer!r}"
            )

    def _check_rope(self) -> None:
        if self.rope not in ROPE_NAMES:
            raise ValueError(f"rope must be one of {', '.join(ROPE_NAMES)}, got {self.rope!r}")
        if self.rope == "none":
            return
        head = self.head_dim or self.embed_dim // self.num_heads
        if head % 4:
            raise ValueError(f"rope={self.rope!r} needs a head width (head_dim, or embed_dim / num_heads) divisible "
                             f"by 4, got {head}")
        if self.rope_indexing not in ("ij", "xy"):
            raise ValueError(f"rope_indexing must be 'ij' (row first) or 'xy' (column first), got "
                             f"{self.rope_indexing!r}")
        if self.rope_theta is not None and self.rope_theta <= 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta}")
        if self.rope_grid is not None:
            object.__setattr__(self, "rope_grid", to_2tuple(self.rope_grid, "rope_grid"))
        for name, low in (("rope_shift", 0.0), ("rope_jitter", 1.0), ("rope_rescale", 1.0)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{name} must be >= {low:g} (or None: off), got {value}")

    def _check_tower(self) -> None:
        """The VLM-tower fields: frames per patch, windows, merger, deepstack and Qwen-VL's pixel bounds."""
        for name in ("temporal_patch_size", "merge_size"):
            _positive_int(name, getattr(self, name))
        for name in ("merge_dim", "window_size", "min_pixels", "max_pixels"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if (self.min_pixels is None) != (self.max_pixels is None):
            raise ValueError("min_pixels and max_pixels go together (Qwen-VL's sizing rule); set both or neither")
        if self.min_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must be <= max_pixels ({self.max_pixels})")
        tokens_wise = [name for name, on in (("a patch merger (merge_dim)", self.merge_dim is not None),
                                             ("window_size", self.window_size is not None)) if on]
        if tokens_wise and self.num_prefix_tokens:
            raise ValueError(f"{' and '.join(tokens_wise)} group patch tokens by their cells, so the model can have no "
                             "class or register tokens; set class_token=False, reg_tokens=0")
        if self.window_size is not None and self.window_size % self.merge_size:
            raise ValueError(f"window_size ({self.window_size} patches) must be a multiple of merge_size "
                             f"({self.merge_size}): a merged group never straddles two windows")
        if self.full_attention_blocks and self.window_size is None:
            raise ValueError("full_attention_blocks name the blocks that skip window attention; set window_size too")
        if self.deepstack and self.merge_dim is None:
            raise ValueError("deepstack features are merged tokens of earlier blocks; set merge_dim (the merger's "
                             "output width) too")
        if self.merge_size > 1 and self.merge_dim is None:
            raise ValueError(f"merge_size={self.merge_size} groups tokens for a patch merger; set merge_dim (its "
                             "output width, the language model's), or leave merge_size at 1")
        for name in ("full_attention_blocks", "deepstack"):
            indices = tuple(getattr(self, name))
            if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.depth for i in indices):
                raise ValueError(f"{name} must be block indices in 0..{self.depth - 1}, got {list(indices)}")
            object.__setattr__(self, name, tuple(sorted(set(indices))))

    @property
    def num_blocks(self) -> int:
        """Blocks actually built after `select_layer` (DeepSeek-VL2 semantics)."""
        if self.select_layer < 0:
            return min(self.depth, self.depth + self.select_layer + 1)
        return min(self.depth, self.select_layer)

    @property
    def mlp_width(self) -> int:
        """The MLP's hidden width: `mlp_hidden_dim`, else int(embed_dim * mlp_ratio)."""
        return self.mlp_hidden_dim or int(self.embed_dim * self.mlp_ratio)

    @property
    def grid_size(self) -> tuple[int, int]:
        """The patch grid at `img_size` (padded up with `dynamic_img_pad`, else the remainder cropped)."""
        (h, w), (ph, pw) = self.img_size, self.patch_size
        return (-(-h // ph), -(-w // pw)) if self.dynamic_img_pad else (h // ph, w // pw)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.reg_tokens

    @property
    def use_fc_norm(self) -> bool:
        """timm's rule: the final norm moves after pooling for avg/max pools unless told otherwise."""
        return self.global_pool in ("avg", "max", "avgmax") if self.fc_norm is None else self.fc_norm


# SimpleViT's argument names (seed 003, vit-pytorch) for the ViTConfig fields they set, to name both in errors.
SIMPLE_VIT_NAMES = {"img_size": "image_size", "in_chans": "channels", "embed_dim": "dim", "num_heads": "heads",
                    "mlp_hidden_dim": "mlp_dim", "head_dim": "dim_head"}
HEAD_NORMS = {"pooled": True, "tokens": False}  # SimpleViT's head_norm -> ViTConfig.fc_norm


def simple_vit_config(
    image_size: int | tuple[int, int],
    patch_size: int | tuple[int, int],
    num_classes: int,
    dim: int,
    depth: int,
    heads: int,
    mlp_dim: int,
    channels: int = 3,
    dim_head: int = 64,
    *,
    head_norm: str = "pooled",
    **fields: Any,
) -> ViTConfig:
    """The ViTConfig of SimpleViT (Beyer et al. 2022; seed 003) from seed 003's arguments: norm-linear-norm
    patches, fixed 2D sin-cos positions, no class token, mean pooling, qkv and output projection without bias,
    LayerNorm eps 1e-5, exact GELU, an MLP exactly `mlp_dim` wide, PyTorch's default initialisation.

    Seed 003's `use_flash` is the kernel, not architecture (`simple_vit_backend`).
    `head_norm='pooled'` normalises the mean (seed 003, vit-pytorch's `simple_flash_attn_vit`); 'tokens' every
    token before it (vit-pytorch's `SimpleViT`, big_vision). `fields`: other ViTConfig fields (check_finite,
    mean, std, dynamic_img_size, drop_path_rate, ...).
    """
    if not isinstance(head_norm, str) or head_norm not in HEAD_NORMS:
        raise ValueError(f"head_norm must be 'pooled' (seed 003) or 'tokens' (vit-pytorch SimpleViT), got "
                         f"{head_norm!r}")
    mapped = dict(
        img_size=image_size, patch_size=patch_size, num_classes=num_classes, embed_dim=dim, depth=depth,
        num_heads=heads, mlp_hidden_dim=mlp_dim, in_chans=channels, head_dim=dim_head,
        fc_norm=HEAD_NORMS[head_norm], qkv_bias=False, proj_bias=False, class_token=False, global_pool="avg",
        pos_embed="sincos", patch_embed="norm_linear_norm", norm_layer="layernorm", norm_eps=1e-5, act_layer="gelu",
    )
    fixed = sorted(set(fields) & set(mapped))
    if fixed:
        raise ValueError(f"SimpleViT sets {', '.join(fixed)} itself (pass its own arguments, or build a "
                         "VisionTransformer for other choices)")
    try:  # PyTorch's default initialisation unless told otherwise, as seed 003 and vit-pytorch
        return ViTConfig().replace(**mapped, **{"weight_init": "skip", **fields})  # type: ignore[return-value]
    except ValueError as err:
        named = [f"{ours} is ViTConfig's {theirs}" for theirs, ours in SIMPLE_VIT_NAMES.items() if theirs in str(err)]
        raise ValueError(f"{err} (SimpleViT's {', '.join(named)})" if named else str(err)) from err


def simple_vit_backend(use_flash: bool = True, attention_type: str | None = None) -> str:
    """Seed 003's kernel switch as a backend name: PyTorch SDPA for `use_flash`, else the math path;
    `attention_type` (any backend name) overrides both."""
    if not isinstance(use_flash, bool):
        raise ValueError(f"use_flash must be True or False, got {use_flash!r}")
    return ("sdpa" if use_flash else "math") if attention_type is None else attention_type


def saved_attention(data: dict[str, Any]) -> tuple[str | None, bool]:
    """The kernel a config.json written before vitkit 0.3 names (None: it names none) and its deterministic flag.
    The loader takes them as a preference, not a request: they say where the file was made, not where it runs."""
    backend = data.get("attention_type")
    if data.get("family") == "simple_vit":
        backend = simple_vit_backend(data.get("use_flash", True), backend)
    deterministic = data.get("deterministic", False)
    if not isinstance(deterministic, bool):
        raise ValueError(f"config 'deterministic' must be true or false, got {deterministic!r}")
    return backend, deterministic


# The fields of a 'simple_vit' config.json, written by vitkit before SimpleViT became a ViTConfig (first the ones
# it had to state); `head_norm` defaulted to 'tokens' then.
LEGACY_SIMPLE_VIT_FIELDS = (
    "image_size", "patch_size", "num_classes", "dim", "depth", "heads", "mlp_dim", "channels", "dim_head",
    "use_flash", "attention_type", "head_norm", "check_finite", "mean", "std",
)


def _legacy_simple_vit(data: dict[str, Any]) -> ViTConfig:
    """The ViTConfig of an old 'simple_vit' config dict (the same model, outputs and weights)."""
    unknown = sorted(set(data) - set(LEGACY_SIMPLE_VIT_FIELDS))
    if unknown:
        raise ValueError(f"simple_vit config has fields vitkit's SimpleViT never had: {', '.join(unknown)}")
    kernel = (*RUNTIME_KEYS, "use_flash")
    return simple_vit_config(**{"head_norm": "tokens", **{k: v for k, v in data.items() if k not in kernel}})


# family -> (the fields config.json must state, the reader of its dict).
_READERS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], ViTConfig]]] = {
    ViTConfig.family: (ViTConfig.required, ViTConfig.from_dict),  # type: ignore[dict-item]
    "simple_vit": (LEGACY_SIMPLE_VIT_FIELDS[:9], _legacy_simple_vit),
}


def config_from_dict(data: dict[str, Any]) -> ViTConfig:
    """Rebuild a config from its dict (as in config.json), read by its 'family' key ('simple_vit', vitkit's
    earlier SimpleViT config, becomes the equivalent ViTConfig).

    The shape-defining fields must be present; unknown fields are refused, others default.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a model config is a JSON object of fields, got {type(data).__name__}")
    family = data.get("family")
    if not isinstance(family, str) or family not in _READERS:
        raise ValueError(
            f"config has family {family!r}; expected one of {', '.join(_READERS)} "
            "(is this a vitkit config.json?)"
        )
    required, read = _READERS[family]
    missing = [name for name in required if name not in data]
    if missing:
        raise ValueError(
            f"{family} config lacks required fields: {', '.join(missing)}; add them (a config written by "
            "vitkit.save_pretrained has every field)"
        )
    return read({k: v for k, v in data.items() if k not in METADATA})


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """['select_layer=-2', 'ignore_head=true'] -> {'select_layer': -2, 'ignore_head': True} (JSON values, bare words
    as strings): the `--set FIELD=VALUE` options of the command line."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings
