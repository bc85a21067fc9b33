"""`vitkit bench memory`: the memory/time trade-off of recomputing the first N blocks (N = 0 ... depth).

Each N trains vitkit in its own process (`vitkit.bench.worker`), so each peak memory is that run's alone:
CUDA's peak allocation, or on CPU the process's peak resident set. The ratios compare tensor memory (the
most that tensors hold during a step): on CPU the resident set also keeps what the C allocator holds on
to after frees, which hides most of what recomputation saves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .machine import machine_info
from .measure import resolve_device, summarize, torch_threads
from .runner import Progress, bench_config, resolve_attention, run_worker
from .settings import BenchSettings, check_ints
from .spec import CandidateSpec


@dataclass(frozen=True)
class MemoryBenchSettings(BenchSettings):
    """What `vitkit bench memory` measures; `levels` None means every N from 0 to the model's depth."""

    steps: int = 3
    warmup: int = 1
    model: str = "vit_base_patch16_224"
    batch_size: int = 32
    img_size: int | None = None
    attention: str = "auto"
    levels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ints(self, {"batch_size": 1})
        (attention,) = resolve_attention([self.attention])
        object.__setattr__(self, "attention", attention)
        depth = bench_config(self.model, self.img_size).num_blocks
        levels = tuple(range(depth + 1)) if self.levels is None else tuple(sorted(set(self.levels)))
        if not levels or any(not isinstance(n, int) or not 0 <= n <= depth for n in levels):
            raise ValueError(f"levels must be block counts from 0 to {depth} (the model's depth), "
                             f"got {list(self.levels or [])!r}")
        object.__setattr__(self, "levels", levels)


def _row(level: int, outcome: dict[str, Any], batch_size: int) -> dict[str, Any]:
    row: dict[str, Any] = {"recomputed": level, "status": outcome["status"], "reason": outcome.get("reason", ""),
                           "peak_mem_mb": None, "tensor_mem_mb": None, "ms_per_step": None, "img_per_s": None,
                           "spread_pct": None, "mem_vs_none": None, "time_vs_none": None}
    if outcome["status"] == "ok":
        stats = summarize(outcome["step_s"], batch_size)
        row.update(peak_mem_mb=outcome["peak_mem_mb"], tensor_mem_mb=outcome["tensor_mem_mb"],
                   ms_per_step=stats["ms_per_step"], img_per_s=stats["img_per_s"], spread_pct=stats["spread_pct"])
    return row


def run_memory_bench(settings: MemoryBenchSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Train with each number of recomputed blocks in turn; ratios are against recomputing none (or the first)."""
    say = progress or (lambda message: None)
    device = resolve_device(settings.device)
    config = bench_config(settings.model, settings.img_size).to_dict()
    with torch_threads(settings.threads):
        machine = machine_info(device)
    rows = []
    for level in settings.levels:
        say(f"{level} block(s) recomputed")
        spec = CandidateSpec("vitkit", config, modes=("train",), attention=settings.attention,
                             batch_size=settings.batch_size, precision=settings.precision, device=str(device),
                             grad_checkpointing=level, steps=settings.steps, warmup=settings.warmup,
                             seed=settings.seed, threads=settings.threads)
        rows.append(_row(level, run_worker(spec)["modes"]["train"], settings.batch_size))
    ran = [row for row in rows if row["status"] == "ok"]
    for row in ran:
        reference = ran[0]["tensor_mem_mb"]
        row["mem_vs_none"] = row["tensor_mem_mb"] / reference if reference and row["tensor_mem_mb"] else None
        row["time_vs_none"] = row["ms_per_step"] / ran[0]["ms_per_step"]
    return {"benchmark": "memory", "settings": settings.record(device), "machine": machine, "rows": rows}

