"""`vitkit bench packing`: a set of mixed-size images packed (NaViT) vs padded to the largest, same model.

Both ways run the same images through the same weights in this process, one after the other, warm-up
first. Throughput counts real image tokens (prefix + patches of each image at its own size) per second:
padding is work, not output. Memory is the most tensors held during one more step (`tensor_memory`).
The work is split into chunks of about `batch_size` padded images' worth of tokens so both fit memory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..models import build_model
from ..train.precision import autocast, precision_dtype
from .machine import machine_info
from .measure import resolve_device, summarize, tensor_memory, time_steps, torch_threads
from .runner import Progress, bench_config
from .spec import check_ints

MODES = ("infer", "train")


@dataclass(frozen=True)
class PackingBenchSettings:
    """What `vitkit bench packing` measures; `max_tokens` None means room for two of the largest images."""

    model: str = "vit_small_patch16_224"
    images: int = 64
    min_side: int = 112
    max_side: int = 448
    max_tokens: int | None = None
    batch_size: int = 8
    mode: str = "infer"
    attention: str = "auto"
    precision: str = "fp32"
    steps: int = 3
    warmup: int = 1
    device: str = "auto"
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        check_ints(self, {"images": 1, "min_side": 1, "max_side": 1, "batch_size": 1, "steps": 1, "warmup": 0,
                          "threads": 1})
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) must be <= max_side ({self.max_side})")
        if self.max_tokens is not None:
            check_ints(self, {"max_tokens": 1})
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        precision_dtype(self.precision)
        bench_config(self.model)  # ValueError naming an unknown model


def random_images(settings: PackingBenchSettings, in_chans: int) -> list[torch.Tensor]:
    """`images` random images with height and width each uniform in [min_side, max_side], seeded."""
    gen = torch.Generator().manual_seed(settings.seed)
    sides = torch.randint(settings.min_side, settings.max_side + 1, (settings.images, 2), generator=gen).tolist()
    return [torch.randn(in_chans, h, w, generator=gen) for h, w in sides]


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


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


def _step(model: torch.nn.Module, batches: list, mode: str, device: torch.device, precision: str) -> Callable[[], None]:
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


def run_packing_bench(settings: PackingBenchSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Time and measure the padded and the packed way over the same images; ratios are packed / padded."""
    say = progress or (lambda message: None)
    device = resolve_device(settings.device)
    config = bench_config(settings.model).replace(
        dynamic_img_size=True, dynamic_img_pad=True, attention_type=settings.attention, num_classes=1000
    )
    with torch_threads(settings.threads):
        torch.manual_seed(settings.seed)
        model = build_model(config).to(device).train(settings.mode == "train")
        patch = tuple(model.patch_embed.patch_size)
        images = random_images(settings, config.in_chans)
        prefix = model.num_prefix_tokens
        largest = max(math.ceil(x.shape[1] / patch[0]) * math.ceil(x.shape[2] / patch[1]) for x in images) + prefix
        max_tokens = settings.max_tokens or 2 * largest
        real_tokens = sum(math.ceil(x.shape[1] / patch[0]) * math.ceil(x.shape[2] / patch[1]) + prefix for x in images)
        padded = [b.to(device) for b in _padded_batches(images, patch, settings.batch_size)]
        padded_len = padded[0].shape[2] // patch[0] * (padded[0].shape[3] // patch[1]) + prefix
        packed = [b.to(device) for b in _packed_batches(images, model, max_tokens, settings.batch_size * padded_len)]
        rows = []
        for name, batches, processed, calls in (
            ("padded", padded, padded_len * len(images), len(padded)),
            ("packed", packed, sum(b.num_sequences * b.seq_len for b in packed), len(packed)),
        ):
            say(f"{name} ({calls} forward call(s))")
            step = _step(model, batches, settings.mode, device, settings.precision)
            seconds = time_steps(step, device, settings.warmup, settings.steps)
            with tensor_memory(device) as peak:
                step()
            stats = summarize(seconds, len(images))
            rows.append({
                "way": name, "calls": calls,
                "sequences": sum(b.num_sequences for b in batches) if name == "packed" else len(images),
                "tokens_processed": processed, "real_tokens": real_tokens,
                "padding_pct": 100.0 * (1.0 - real_tokens / processed),
                "ms_per_step": stats["ms_per_step"], "spread_pct": stats["spread_pct"],
                "img_per_s": stats["img_per_s"], "tokens_per_s": real_tokens * 1000.0 / stats["ms_per_step"],
                "tensor_mem_mb": peak(),
            })
        machine = machine_info(device)
    for row in rows:
        row["speedup"] = row["tokens_per_s"] / rows[0]["tokens_per_s"]
        row["mem_ratio"] = row["tensor_mem_mb"] / rows[0]["tensor_mem_mb"] if rows[0]["tensor_mem_mb"] else None
    return {"benchmark": "packing",
            "settings": {**dataclasses.asdict(settings), "device": str(device), "max_tokens": max_tokens},
            "machine": machine, "rows": rows}
