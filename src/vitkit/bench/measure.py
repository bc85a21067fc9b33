"""Timing and memory primitives shared by every benchmark: devices, timed steps, peak memory (precisions: train)."""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

MIB = 2**20


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when visible, else CPU), 'cpu', 'cuda' or 'cuda:N'; ValueError when it is not here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA device is visible here; use --device cpu")
    return device


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op threads (None: torch's current setting), then restore it."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], object], device: torch.device, warmup: int, steps: int) -> list[float]:
    """Run `step` `warmup` times untimed, then `steps` times, returning each timed step's seconds."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak on CUDA; on CPU the peak is the process's, which cannot be reset."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def current_memory_mb(device: torch.device) -> float | None:
    """CUDA: memory allocated now. CPU: the resident set size now (Linux /proc), None where unknown."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / MIB
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MIB


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: most memory allocated since the last reset. CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / MIB if sys.platform == "darwin" else peak / 1024


@contextlib.contextmanager
def tensor_memory(device: torch.device) -> Iterator[Callable[[], float]]:
    """Measure the peak memory of tensors created inside the block, in MiB: `with tensor_memory(d) as peak:`.

    CUDA reads the allocator's peak. On CPU, where no allocator keeps statistics, every tensor an
    operator returns is counted until it is freed (`LiveTensorBytes`); this slows the block down, so
    time it separately.
    """
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield lambda: (torch.cuda.max_memory_allocated(device) - base) / MIB
        return
    from .live_tensors import LiveTensorBytes

    counter = LiveTensorBytes()
    with counter:
        yield lambda: counter.peak / MIB


def summarize(seconds: list[float], batch_size: int) -> dict[str, float]:
    """Median and spread of step times (ms) and throughput (images/s); spread = interquartile range / median."""
    ms = sorted(1000.0 * s for s in seconds)
    median = statistics.median(ms)
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else (ms[0], 0.0, ms[0])
    return {
        "ms_per_step": median,
        "ms_per_step_min": ms[0],
        "ms_per_step_max": ms[-1],
        "img_per_s": 1000.0 * batch_size / median,
        "img_per_s_min": 1000.0 * batch_size / ms[-1],
        "img_per_s_max": 1000.0 * batch_size / ms[0],
        "spread_pct": 100.0 * (q3 - q1) / median,
    }
