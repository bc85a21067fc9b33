"""`vitkit bench packing`: a set of mixed-size images three ways through the same model: packed (NaViT) at each
`max_tokens`, padded to the largest in batches, and one image at a time.

Every way runs the same images through the same weights in this process, in turn, warm-up first; with
`rounds` > 1 the ways take turns round after round and their step times are pooled, so a change in load hits
them alike. Throughput counts real image tokens (prefix + patches of each image at its own size) per second:
padding is work, not output. Memory is the most tensors held during one more step (`tensor_memory`). Padded and
packed work is split into chunks of about `batch_size` padded images' worth of tokens, so all ways fit memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..models import build_model
from ..runtime import autocast
from .machine import machine_info
from .measure import resolve_device, summarize, tensor_memory, time_steps, torch_threads
from .runner import Progress, bench_config
from .settings import BenchSettings, check_ints

MODES = ("infer", "train")


@dataclass(frozen=True)
class PackingBenchSettings(BenchSettings):
    """What `vitkit bench packing` measures: `images` random images with sides from `min_side` to `max_side` px
    in steps of `side_step`, packed at each of `max_tokens` (an empty tuple: room for two of the largest)."""

    steps: int = 3
    warmup: int = 1
    model: str = "vit_small_patch16_224"
    images: int = 24
    min_side: int = 112
    max_side: int = 448
    side_step: int = 16
    max_tokens: tuple[int, ...] = (512, 1024, 2048, 4096)
    batch_size: int = 8
    mode: str = "infer"
    attention: str = "auto"
    rounds: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ints(self, {"images": 1, "min_side": 1, "max_side": 1, "side_step": 1, "batch_size": 1, "rounds": 1})
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) must be <= max_side ({self.max_side})")
        object.__setattr__(self, "max_tokens", tuple(self.max_tokens))
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 1 for t in self.max_tokens):
            raise ValueError(f"max_tokens must be integers >= 1, got {self.max_tokens!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        bench_config(self.model)  # ValueError naming an unknown model


def random_images(settings: PackingBenchSettings, in_chans: int) -> list[torch.Tensor]:
    """`images` random images, height and width each uniform over min_side..max_side in steps of side_step, seeded."""
    gen = torch.Generator().manual_seed(settings.seed)
    choices = (settings.max_side - settings.min_side) // settings.side_step + 1
    sides = (settings.min_side + settings.side_step * torch.randint(0, choices, (settings.images, 2), generator=gen))
    return [torch.randn(in_chans, h, w, generator=gen) for h, w in sides.tolist()]


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _tokens(image: torch.Tensor, patch: tuple[int, int], prefix: int) -> int:
    return math.ceil(image.shape[1] / patch[0]) * math.ceil(image.shape[2] / patch[1]) + prefix


def _padded_batches(images: list[torch.Tensor], patch: tuple[int, int], batch_size: int) -> list[torch.Tensor]:
    """Every image zero-padded to the largest height and width (patch multiples), in batches."""
    height = math.ceil(max(x.shape[1] for x in images) / patch[0]) * patch[0]
    width = math.ceil(max(x.shape[2] for x in images) / patch[1]) * patch[1]
    padded = [F.pad(x, (0, width - x.shape[2], 0, height - x.shape[1])) for x in images]
    return [torch.stack(chunk) for chunk in _chunks(padded, batch_size)]


def _packed_batches(images: list[torch.Tensor], model: torch.nn.Module, max_tokens: int, token_budget: int) -> list:
    """The images packed once, then split into groups of whole sequences of about `token_budget` tokens."""
    whole = model.pack(images, max_tokens=max_tokens, pad_to_patch=True)
    per_chunk = max(1, token_budget // max_tokens)
    return [model.pack([images[i] for members in group for i in members], max_tokens=max_tokens, pad_to_patch=True)
            for group in _chunks(list(whole.bins), per_chunk)]


@dataclass
class Way:
    """One way through the images: its name, its `max_tokens` (packed only), its inputs, the tokens it runs."""

    name: str
    max_tokens: int | None
    batches: list
    tokens_processed: int
    sequences: int
    skip: str | None = None  # why this way cannot run these images


def build_ways(settings: PackingBenchSettings, model: torch.nn.Module, images: list[torch.Tensor],
               device: torch.device) -> list[Way]:
    """One at a time, padded, then packed at each of `settings.max_tokens` (skipped if the largest image won't fit)."""
    patch, prefix = tuple(model.patch_embed.patch_size), model.num_prefix_tokens
    padded = _padded_batches(images, patch, settings.batch_size)
    padded_len = _tokens(padded[0][0], patch, prefix)
    ways = [
        Way("one at a time", None, [x[None].to(device) for x in images],
            sum(_tokens(x, patch, prefix) for x in images), len(images)),
        Way("padded", None, [b.to(device) for b in padded], padded_len * len(images), len(images)),
    ]
    largest = max(_tokens(x, patch, prefix) for x in images)
    for max_tokens in settings.max_tokens or (2 * largest,):
        if max_tokens < largest:
            ways.append(Way("packed", max_tokens, [], 0, 0, skip=f"the largest image has {largest} tokens"))
            continue
        batches = [b.to(device) for b in _packed_batches(images, model, max_tokens, settings.batch_size * padded_len)]
        ways.append(Way("packed", max_tokens, batches, sum(b.num_sequences * b.seq_len for b in batches),
                        sum(b.num_sequences for b in batches)))
    return ways


def step_fn(model: torch.nn.Module, batches: list, mode: str, device: torch.device,
            precision: str) -> Callable[[], None]:
    """One step of a way: every batch forward (and backward with the gradients cleared, when training)."""
    def run() -> None:
        for batch in batches:
            with autocast(device, precision):
                out = model(batch)
            if mode == "train":
                out.float().square().mean().backward()
        if mode == "train":
            model.zero_grad(set_to_none=True)

    if mode == "infer":
        def infer() -> None:
            with torch.inference_mode():
                run()
        return infer
    return run


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def run_packing_bench(settings: PackingBenchSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Time and measure each way over the same images; ratios are over one-at-a-time and over padded."""
    say = progress or (lambda message: None)
    device = resolve_device(settings.device)
    config = bench_config(settings.model).replace(
        dynamic_img_size=True, dynamic_img_pad=True, num_classes=1000
    )
    with torch_threads(settings.threads):
        torch.manual_seed(settings.seed)
        model = build_model(config).to(device).train(settings.mode == "train")
        model.set_attention(settings.attention)
        images = random_images(settings, config.in_chans)
        real_tokens = sum(_tokens(x, tuple(model.patch_embed.patch_size), model.num_prefix_tokens) for x in images)
        ways = build_ways(settings, model, images, device)
        runnable = [way for way in ways if way.skip is None]
        steps = {id(way): step_fn(model, way.batches, settings.mode, device, settings.precision) for way in runnable}
        seconds: dict[int, list[float]] = {id(way): [] for way in runnable}
        for round_ in range(settings.rounds):
            for way in runnable:
                label = way.name if way.max_tokens is None else f"{way.name} {way.max_tokens}"
                say(f"round {round_ + 1}/{settings.rounds}: {label} ({len(way.batches)} forward call(s))")
                seconds[id(way)] += time_steps(steps[id(way)], device, settings.warmup, settings.steps)
        rows = []
        for way in ways:
            row: dict[str, Any] = {"way": way.name, "max_tokens": way.max_tokens, "real_tokens": real_tokens}
            if way.skip is not None:
                rows.append({**row, "status": "skipped", "reason": way.skip})
                continue
            with tensor_memory(device) as peak:
                steps[id(way)]()
            stats = summarize(seconds[id(way)], len(images))
            rows.append({
                **row, "status": "ok", "calls": len(way.batches), "sequences": way.sequences,
                "tokens_processed": way.tokens_processed,
                "padding_pct": 100.0 * (1.0 - real_tokens / way.tokens_processed),
                "ms_per_step": stats["ms_per_step"], "spread_pct": stats["spread_pct"], "img_per_s": stats["img_per_s"],
                "tokens_per_s": real_tokens * 1000.0 / stats["ms_per_step"], "tensor_mem_mb": peak(),
            })
        machine = machine_info(device)
    one, padded = rows[0], rows[1]
    for row in rows:
        if row["status"] == "ok":
            row["vs_one"] = _ratio(row["tokens_per_s"], one["tokens_per_s"])
            row["vs_padded"] = _ratio(row["tokens_per_s"], padded["tokens_per_s"])
            row["mem_vs_padded"] = _ratio(row["tensor_mem_mb"], padded["tensor_mem_mb"])
    return {"benchmark": "packing", "settings": settings.record(device),
            "machine": machine, "rows": rows}
