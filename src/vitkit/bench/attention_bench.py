"""`vitkit bench attention`: each attention backend's kernel time and memory, forward and forward+backward.

Kernels run in this process, one after another, on the same random (B, H, N, D) inputs. Memory is the
peak of the tensors a call creates (its inputs excluded): the N x N score matrix shows up for `math`,
not for the fused kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..attention import BACKENDS, BackendUnavailableError, Request, scaled_dot_product_attention
from ..attention.capability import cuda_capability
from ..choices import BENCH_ATTENTION_BACKENDS
from ..runtime import precision_dtype
from .machine import machine_info
from .measure import resolve_device, summarize, tensor_memory, time_steps, torch_threads
from .runner import Progress, resolve_attention
from .settings import BenchSettings, check_ints

DEFAULT_BACKENDS = BENCH_ATTENTION_BACKENDS
PASSES = ("fwd", "fwd+bwd")


@dataclass(frozen=True)
class AttentionBenchSettings(BenchSettings):
    """What `vitkit bench attention` measures; validated on creation (ValueError naming the argument)."""

    tokens: tuple[int, ...] = (197, 577, 1025, 4097)
    heads: int = 12
    head_dim: int = 64
    batch_size: int = 1
    backends: tuple[str, ...] = DEFAULT_BACKENDS

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tokens or any(not isinstance(n, int) or n < 1 for n in self.tokens):
            raise ValueError(f"tokens must be positive integers, got {list(self.tokens)!r}")
        check_ints(self, {"heads": 1, "head_dim": 1, "batch_size": 1})
        if "auto" in self.backends:
            raise ValueError("backends takes kernel names ('all' for every one); 'auto' is not a kernel")
        object.__setattr__(self, "backends", resolve_attention(self.backends))


def attention_flops(batch: int, heads: int, tokens: int, head_dim: int, backward: bool) -> int:
    """Scores and weighted values (2 products); backward adds twice that (no recomputation counted)."""
    forward = 4 * batch * heads * tokens * tokens * head_dim
    return 3 * forward if backward else forward


def _inputs(settings: AttentionBenchSettings, tokens: int, device: torch.device, grad: bool) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (settings.batch_size, settings.heads, tokens, settings.head_dim)
    dtype = precision_dtype(settings.precision)
    return [torch.randn(shape, generator=generator).to(device, dtype).requires_grad_(grad) for _ in range(4)]


def _step(backend: str, tensors: list[torch.Tensor], backward: bool) -> Callable[[], None]:
    q, k, v, grad_out = tensors

    def forward() -> None:
        with torch.no_grad():
            scaled_dot_product_attention(q, k, v, backend=backend)

    def forward_backward() -> None:
        q.grad = k.grad = v.grad = None
        scaled_dot_product_attention(q, k, v, backend=backend).backward(grad_out.detach())

    return forward_backward if backward else forward


def _peak_memory(step: Callable[[], None], device: torch.device) -> tuple[float | None, str]:
    """(peak MiB of one more call, '') or (None, why): compiled kernels (flex) do not run under the CPU counter."""
    try:
        with tensor_memory(device) as peak:
            step()
    except RuntimeError as err:
        return None, f"memory not measured: the CPU tensor counter cannot trace it ({type(err).__name__})"
    return peak(), ""


def _measure(settings: AttentionBenchSettings, backend: str, tokens: int, pass_: str,
             device: torch.device) -> dict[str, Any]:
    backward = pass_ == "fwd+bwd"
    dtype = precision_dtype(settings.precision)
    request = Request(device.type, dtype, settings.head_dim, needs_grad=backward,
                      compute_capability=cuda_capability(device))
    row: dict[str, Any] = {"backend": backend, "tokens": tokens, "pass": pass_, "status": "ok", "reason": "",
                           "notes": "", "ms": None, "ms_min": None, "ms_max": None, "spread_pct": None,
                           "peak_mem_mb": None, "gflops_per_s": None}
    why = BACKENDS[backend].reason(request)
    if why is not None:
        return {**row, "status": "skipped", "reason": why}
    try:
        step = _step(backend, _inputs(settings, tokens, device, backward), backward)
        seconds = time_steps(step, device, settings.warmup, settings.steps)
        peak_mb, notes = _peak_memory(step, device)
    except BackendUnavailableError as err:
        return {**row, "status": "skipped", "reason": str(err)}
    except torch.OutOfMemoryError:
        return {**row, "status": "failed", "reason": "out of memory"}
    except RuntimeError as err:
        return {**row, "status": "failed", "reason": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
    stats = summarize(seconds, 1)
    flops = attention_flops(settings.batch_size, settings.heads, tokens, settings.head_dim, backward)
    return {**row, "notes": notes, "ms": stats["ms_per_step"], "ms_min": stats["ms_per_step_min"],
            "ms_max": stats["ms_per_step_max"], "spread_pct": stats["spread_pct"], "peak_mem_mb": peak_mb,
            "gflops_per_s": flops / (stats["ms_per_step"] / 1000) / 1e9}


def run_attention_bench(settings: AttentionBenchSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Every backend x token count x pass; rows that cannot run here say why. Returns the report dict."""
    say = progress or (lambda message: None)
    device = resolve_device(settings.device)
    rows = []
    with torch_threads(settings.threads):
        machine = machine_info(device)
        for backend in settings.backends:
            say(f"{backend}: {', '.join(map(str, settings.tokens))} tokens")
            rows += [_measure(settings, backend, n, pass_, device) for n in settings.tokens for pass_ in PASSES]
    return {"benchmark": "attention", "settings": settings.record(device), "machine": machine, "rows": rows}

