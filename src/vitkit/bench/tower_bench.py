"""`vitkit bench tower`: the vision tower of a vision-language model (Qwen2.5-VL, Qwen3-VL), packed in vitkit, against
transformers' tower on the same images and the same weights.

The tower is the registered one cut to `depth` blocks (Qwen2.5-VL keeps the full-attention blocks below it, else its
last block, so windowed and full attention both run; Qwen3-VL keeps the deepstack blocks below it). transformers builds
it from the same numbers, its weights are drawn at a trained tower's magnitudes and converted into vitkit's model, so
both compute one function; a check before timing fails loudly when their merged tokens differ by more than `TOLERANCE`.
Images get random raw sides, then Qwen's `smart_resize` size. Each way's input is made once, outside the timed passes:
vitkit a `PackedBatch` (`model.pack`: one varlen forward, windows as segments; by default all images in one sequence,
as transformers takes them), transformers its flattened patches and `grid_thw`, attention on SDPA. A step is one pass
over all images in `torch.inference_mode()`; with `rounds` > 1 the ways take turns and their step times are pooled.
tokens/s counts the images' patch tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attention import canonical_name
from ..models import ViTConfig, build_model, get_config
from ..packing import PackedBatch
from ..runtime import autocast
from .machine import machine_info
from .measure import resolve_device, summarize, time_steps, torch_threads
from .runner import Progress
from .settings import BenchSettings, check_ints
from .weights import realistic_

TOWERS = ("qwen2_5_vl_vision_", "qwen3_vl_vision_")
TOLERANCE = 1e-3  # largest |difference| of merged tokens (O(1) values) the two ways may show, fp32
VITKIT, HF = "vitkit (packed)", "transformers"


@dataclass(frozen=True)
class TowerBenchSettings(BenchSettings):
    """What `vitkit bench tower` measures: `model` at `depth` blocks on `images` random images with raw sides from
    `min_side` to `max_side` px, packed in sequences of `max_tokens` (None: `model.pack`'s default, room for four
    images of `max_pixels`: one sequence here).
    `width` (None: the model's) narrows the tower, MLP in proportion, for quick runs."""

    steps: int = 3
    warmup: int = 1
    model: str = "qwen2_5_vl_vision_7b"
    depth: int = 4
    images: int = 16
    min_side: int = 112
    max_side: int = 448
    max_tokens: int | None = None
    attention: str = "auto"
    rounds: int = 1
    width: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ints(self, {"depth": 1, "images": 1, "min_side": 1, "max_side": 1, "rounds": 1})
        if self.max_tokens is not None:
            check_ints(self, {"max_tokens": 1})
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) must be <= max_side ({self.max_side})")
        if not isinstance(self.model, str) or not self.model.startswith(TOWERS):
            raise ValueError(f"model must be a Qwen-VL vision tower (qwen2_5_vl_vision_* or qwen3_vl_vision_*, see "
                             f"`vitkit models`), got {self.model!r}")
        canonical_name(self.attention)  # ValueError naming the choices
        tower_config(self.model, self.depth, self.width)  # ValueError: unknown model, bad depth or width

    @property
    def config(self) -> ViTConfig:
        return tower_config(self.model, self.depth, self.width)


def tower_config(model: str, depth: int, width: int | None = None) -> ViTConfig:
    """The registered tower `model` cut to its first `depth` blocks (and `width` wide, MLP in proportion)."""
    base = get_config(model)
    if not 1 <= depth <= base.depth:
        raise ValueError(f"depth must be between 1 and {base.depth} (the blocks of {model}), got {depth}")
    changes: dict[str, Any] = {"depth": depth, "deepstack": tuple(i for i in base.deepstack if i < depth)}
    if base.window_size is not None:
        if depth < 2:
            raise ValueError(f"depth must be >= 2 for {model}: one windowed and one full-attention block, got {depth}")
        changes["full_attention_blocks"] = tuple(i for i in base.full_attention_blocks if i < depth) or (depth - 1,)
    if width is not None:
        step = 4 * base.num_heads  # every head's width a multiple of 4: two rotated axes of rotate-half pairs
        if not isinstance(width, int) or width < step or width % step:
            raise ValueError(f"width must be a multiple of {step} (4 x the {base.num_heads} heads), got {width!r}")
        changes.update(embed_dim=width, mlp_hidden_dim=2 * max(1, round(base.mlp_width * width / base.embed_dim / 2)))
    return base.replace(**changes)


def _hf_classes(windowed: bool) -> tuple[type, type]:
    """transformers' tower and config classes (Qwen2.5-VL when `windowed`, else Qwen3-VL); one-line ImportError."""
    try:
        if windowed:
            from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
            from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

            return Qwen2_5_VisionTransformerPretrainedModel, Qwen2_5_VLVisionConfig
        from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

        return Qwen3VLVisionModel, Qwen3VLVisionConfig
    except ImportError as err:
        raise ImportError(f"bench tower compares against transformers' Qwen-VL towers, which cannot be imported here "
                          f"({err}); fix: pip install transformers") from err


def hf_tower(config: ViTConfig, seed: int = 0) -> nn.Module:
    """transformers' tower with `config`'s numbers, attention on SDPA, weights as `realistic_` draws them (`seed`)."""
    windowed = config.window_size is not None
    model_class, config_class = _hf_classes(windowed)
    patch = config.patch_size[0]  # square patches, as the config holds them: (height, width)
    common = dict(depth=config.depth, hidden_size=config.embed_dim, intermediate_size=config.mlp_width,
                  num_heads=config.num_heads, out_hidden_size=config.merge_dim, patch_size=patch,
                  spatial_merge_size=config.merge_size, temporal_patch_size=config.temporal_patch_size,
                  in_channels=config.in_chans)
    if windowed:
        hf_config = config_class(**common, window_size=config.window_size * patch,
                                 fullatt_block_indexes=list(config.full_attention_blocks))
    else:
        hf_config = config_class(**common, deepstack_visual_indexes=list(config.deepstack),
                                 num_position_embeddings=math.prod(config.grid_size))
    hf_config._attn_implementation = "sdpa"
    return realistic_(model_class(hf_config), seed)


def vitkit_tower(config: ViTConfig, hf: nn.Module) -> nn.Module:
    """vitkit's model of `config` on the transformers tower's weights (converted, loaded strictly)."""
    from ..checkpoints import convert_state_dict

    source_format = "hf-qwen2.5-vl" if config.window_size is not None else "hf-qwen3-vl"
    converted = convert_state_dict(hf.state_dict(), source_format, config=config)
    model = build_model(config.replace(weight_init="skip"))
    model.load_state_dict(converted.state_dict)
    return model.eval()


def tower_images(settings: TowerBenchSettings, config: ViTConfig) -> list[torch.Tensor]:
    """`images` random images (seeded), raw sides uniform in min_side..max_side, each at its `smart_resize` size."""
    from ..data import smart_resize

    gen = torch.Generator().manual_seed(settings.seed)
    sides = torch.randint(settings.min_side, settings.max_side + 1, (settings.images, 2), generator=gen).tolist()
    factor = config.patch_size[0] * config.merge_size
    sizes = [smart_resize(h, w, factor, config.min_pixels, config.max_pixels) for h, w in sides]
    return [torch.randn(config.in_chans, h, w, generator=gen) for h, w in sizes]


def hf_inputs(images: list[torch.Tensor], config: ViTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The Qwen-VL processors' layout: each image as `temporal_patch_size` equal frames, its patches flattened
    (C, T, p, p) in merge-group order, all images concatenated; and each image's (t, h, w) grid."""
    p, m, frames = config.patch_size[0], config.merge_size, config.temporal_patch_size
    flat, grids = [], []
    for image in images:
        c, h, w = image.shape
        gh, gw = h // p, w // p
        patches = image[None].expand(frames, -1, -1, -1).reshape(frames, c, gh // m, m, p, gw // m, m, p)
        flat.append(patches.permute(2, 5, 3, 6, 1, 0, 4, 7).reshape(gh * gw, -1))
        grids.append((1, gh, gw))
    return torch.cat(flat), torch.tensor(grids)


@dataclass
class Way:
    """One way through the images: its name, what it is, and one pass returning its merged tokens and deepstack
    features, each (all images' rows, width) in image order."""

    name: str
    notes: str
    run: Callable[[], list[torch.Tensor]]


def build_ways(model: nn.Module, hf: nn.Module, images: list[torch.Tensor], config: ViTConfig, max_tokens: int | None,
               device: torch.device) -> list[Way]:
    """vitkit on a batch packed in sequences of `max_tokens` and transformers on its flattened patches, each input
    made here, once."""
    batch: PackedBatch = model.pack(images, max_tokens=max_tokens).to(device)
    pixels, grid_thw = (t.to(device) for t in hf_inputs(images, config))

    def vitkit_pass() -> list[torch.Tensor]:
        out = model.encode(batch)
        return [torch.cat(out.tokens), *(torch.cat(feature) for feature in out.deepstack)]

    def hf_pass() -> list[torch.Tensor]:
        out = hf(pixels, grid_thw=grid_thw)
        return [out.pooler_output, *(getattr(out, "deepstack_features", None) or [])]

    return [
        Way(VITKIT, f"attention {model.attention_backend}, {batch.num_sequences} sequence(s) of {batch.seq_len} "
                    f"slots for {batch.patch_slots.numel()} patches", vitkit_pass),
        Way(HF, f"{type(hf).__name__}, attn_implementation={hf.config._attn_implementation}", hf_pass),
    ]


def max_difference(ways: list[Way]) -> float:
    """The largest |difference| between the two ways' merged tokens and deepstack features (fp32, one pass each);
    RuntimeError above `TOLERANCE`: the timings would compare two different functions."""
    with torch.inference_mode():
        mine, theirs = (way.run() for way in ways)
    if [t.shape for t in mine] != [t.shape for t in theirs]:
        raise RuntimeError(f"vitkit and transformers give outputs of different shapes: "
                           f"{[tuple(t.shape) for t in mine]} vs {[tuple(t.shape) for t in theirs]}")
    diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(mine, theirs, strict=True))
    if not diff <= TOLERANCE:
        raise RuntimeError(f"vitkit and transformers differ by {diff:.3g} (> {TOLERANCE:g}) on the merged tokens of "
                           "the same images and weights; the timings would compare two different functions")
    return diff


def _step(way: Way, device: torch.device, precision: str) -> Callable[[], None]:
    """One timed pass of `way`: inference mode, under autocast when `precision` asks for it."""
    def step() -> None:
        with torch.inference_mode(), autocast(device, precision):
            way.run()
    return step


def run_tower_bench(settings: TowerBenchSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Check that both ways agree, time them in turn, and report img/s, patch tokens/s and vitkit / transformers."""
    say = progress or (lambda message: None)
    device = resolve_device(settings.device)
    config = settings.config
    _hf_classes(config.window_size is not None)  # a missing transformers fails before anything is built
    with torch_threads(settings.threads):
        say(f"{settings.model} at depth {settings.depth}: build (transformers' tower, vitkit's on its weights)")
        hf = hf_tower(config, settings.seed).to(device)
        model = vitkit_tower(config, hf).to(device)
        model.set_attention(settings.attention)
        images = tower_images(settings, config)
        tokens = sum(math.prod(image.shape[1:]) // math.prod(config.patch_size) for image in images)
        ways = build_ways(model, hf, images, config, settings.max_tokens, device)
        say("the parity check: both ways once, fp32")
        diff = max_difference(ways)
        seconds: dict[str, list[float]] = {way.name: [] for way in ways}
        for round_ in range(settings.rounds):
            for way in ways:
                say(f"round {round_ + 1}/{settings.rounds}: {way.name}")
                seconds[way.name] += time_steps(_step(way, device, settings.precision), device, settings.warmup,
                                                settings.steps)
        machine = machine_info(device)
    rows = []
    for way in ways:
        stats = summarize(seconds[way.name], len(images))
        rows.append({"way": way.name, "notes": way.notes, "ms_per_step": stats["ms_per_step"],
                     "spread_pct": stats["spread_pct"], "img_per_s": stats["img_per_s"],
                     "tokens_per_s": tokens * 1000.0 / stats["ms_per_step"]})
    for row in rows:
        row["ratio"] = row["img_per_s"] / rows[-1]["img_per_s"]
    tower = {"embed_dim": config.embed_dim, "mlp_hidden_dim": config.mlp_width,
             "full_attention_blocks": list(config.full_attention_blocks), "window_size": config.window_size,
             "deepstack": list(config.deepstack), "params": sum(p.numel() for p in model.parameters())}
    return {"benchmark": "tower", "settings": settings.record(device), "machine": machine, "tower": tower,
            "sizes": [list(image.shape[1:]) for image in images], "patch_tokens": tokens,
            "merged_tokens": tokens // config.merge_size**2, "max_abs_diff": diff, "tolerance": TOLERANCE,
            "rows": rows}

