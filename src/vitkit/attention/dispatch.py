"""One attention entry point over every backend: validation, `auto` choice, and the usability report."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import flash, flex, math, sdpa, xformers
from .capability import BackendUnavailableError, Capability, Request, cuda_capability


@dataclass(frozen=True)
class Backend:
    """An attention kernel: what it can run, how to run it, and how to get it when it can't."""

    name: str
    capability: Capability
    run: Callable[..., torch.Tensor]
    fix: str
    extra_reason: Callable[[Request], str | None] | None = None  # package or device-specific limits

    def reason(self, req: Request) -> str | None:
        """Why this backend cannot run `req`, or None when it can."""
        return self.capability.reason(req) or (self.extra_reason(req) if self.extra_reason else None)


def _sdpa_sub(name: str) -> Backend:
    def extra(req: Request) -> str | None:
        if name == "flash" and req.device_type == "cpu" and req.dropout:
            return "has no attention dropout on CPU"
        if name == "flash" and req.device_type == "cuda":
            return sdpa.cuda_flash_reason(req.dtype, req.compute_capability, req.mask)
        return None

    return Backend(
        name=f"sdpa:{name}",
        capability=sdpa.SUB_CAPABILITIES[name],
        run=functools.partial(sdpa.run, sub_kernel=name),
        fix=sdpa.FIX,
        extra_reason=extra,
    )


BACKENDS: dict[str, Backend] = {
    "math": Backend("math", math.CAPABILITY, math.run, math.FIX),
    "sdpa": Backend("sdpa", sdpa.CAPABILITY, sdpa.run, sdpa.FIX),
    "flash": Backend("flash", flash.CAPABILITY, flash.run, flash.FIX, flash.package_reason),
    "xformers": Backend("xformers", xformers.CAPABILITY, xformers.run, xformers.FIX, xformers.package_reason),
    "flex": Backend("flex", flex.CAPABILITY, flex.run, flex.FIX),
    **{f"sdpa:{name}": _sdpa_sub(name) for name in sdpa.SUB_KERNELS},
}
# The seed's names, kept so its configs keep working.
ALIASES = {"scaled_dot_product": "math", "flash_attention": "flash", "flash_attn": "flash", "torch": "sdpa"}
# `auto` tries these in order: fastest first where each is usable.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("flash", "sdpa", "xformers", "flex", "math"),
    "cpu": ("sdpa", "flex", "math"),  # flex compiles per shape: never ahead of SDPA's fused CPU kernel
}
_DEFAULT_ORDER = ("sdpa", "math")
BACKEND_NAMES = ("auto", *BACKENDS)


def canonical_name(backend: str) -> str:
    """Resolve aliases; raise ValueError naming the choices for an unknown name."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    name = ALIASES.get(backend, backend)
    if name != "auto" and name not in BACKENDS:
        choices = ", ".join([*BACKEND_NAMES, *ALIASES])
        raise ValueError(f"unknown attention backend {backend!r}; choose one of: {choices}")
    return name


def _first_usable(req: Request) -> str:
    for name in AUTO_ORDER.get(req.device_type, _DEFAULT_ORDER):
        if BACKENDS[name].reason(req) is None:
            return name
    return "math"


_cached_first_usable = functools.lru_cache(maxsize=256)(_first_usable)


def choose(req: Request) -> str:
    """The backend `auto` runs for `req`: the first usable one in this device's speed order."""
    # Under torch.compile the choice is traced once into the graph; eagerly it is memoised per request kind.
    return _first_usable(req) if torch.compiler.is_compiling() else _cached_first_usable(req)


@dataclass(frozen=True)
class BackendStatus:
    """One row of `backend_report`."""

    name: str
    usable: bool
    reason: str  # why not, or what it is when usable
    chosen: bool = False  # what `auto` would run


def _describe(name: str) -> str:
    if name == "flash":
        return "FlashAttention-3" if flash.fa3() is not None else "FlashAttention-2 (flash_attn)"
    if name.startswith("sdpa:"):
        return f"SDPA pinned to its {name.removeprefix('sdpa:')} kernel"
    return {
        "math": "reference matmul-softmax-matmul, returns weights for maps",
        "sdpa": "torch.nn.functional.scaled_dot_product_attention",
        "xformers": "xformers.ops.memory_efficient_attention",
        "flex": "torch.nn.attention.flex_attention, compiled",
    }[name]


def backend_report(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    head_dim: int = 64,
    *,
    mask: str | None = None,
    dropout: bool = False,
    needs_grad: bool = False,
    deterministic: bool = False,
) -> list[BackendStatus]:
    """For each backend: can it run attention with these properties on this device, and if not, why."""
    device = torch.device(device)
    req = Request(
        device_type=device.type,
        dtype=dtype,
        head_dim=head_dim,
        mask=mask,
        dropout=dropout,
        needs_grad=needs_grad,
        deterministic=deterministic,
        compute_capability=cuda_capability(device),
    )
    chosen = choose(req)
    rows = []
    for name, backend in BACKENDS.items():
        why = backend.reason(req)
        text = _describe(name) if why is None else f"{why}; fix: {backend.fix}"
        rows.append(BackendStatus(name, why is None, text, chosen=name == chosen))
    return rows


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
                  dropout_p: float) -> None:
    for arg, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{arg} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{arg} must be 4-D (batch, heads, tokens, head_dim), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{arg} must be a floating-point tensor, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise ValueError(
            f"q, k, v must share dtype and device, got {q.dtype}/{k.dtype}/{v.dtype} on "
            f"{q.device}/{k.device}/{v.device}"
        )
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[3] != k.shape[3]:
        raise ValueError(
            "q (B, H, N, D), k (B, H, M, D) and v (B, H, M, Dv) disagree: got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if attn_mask is None:
        return
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask must be a torch.Tensor or None, got {type(attn_mask).__name__}")
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(
            f"attn_mask must be bool (True = attend) or a float additive bias, got {attn_mask.dtype}"
        )
    target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    try:
        if attn_mask.dim() > 4:
            raise RuntimeError
        torch.broadcast_shapes(attn_mask.shape, target)
    except RuntimeError:
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to (B, H, N, M) = {target}; give it "
            "shape (N, M), (B, 1, N, M) or (B, H, N, M)"
        ) from None
    if attn_mask.device != q.device:
        raise ValueError(f"attn_mask is on {attn_mask.device} but q is on {q.device}; move it with .to()")


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    backend: str = "auto",
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    deterministic: bool = False,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v on (B, H, N, D) tensors, through the named (or fastest) backend.

    `attn_mask` is bool (True = attend) or additive, broadcastable to (B, H, N, M). Dropout is applied
    whenever `dropout_p > 0`: callers pass 0 outside training. A named backend that cannot run these
    inputs raises `BackendUnavailableError` with the reason and the fix; `auto` never does where
    `math` could run.
    """
    _check_inputs(q, k, v, attn_mask, dropout_p)
    name = canonical_name(backend)
    req = Request.of(q, k, v, attn_mask, dropout_p, deterministic)
    if name == "auto":
        name = choose(req)
    else:
        why = BACKENDS[name].reason(req)
        if why is not None:
            raise BackendUnavailableError(
                f"attention backend '{name}' cannot run here: it {why} "
                f"(inputs: {q.dtype} on {q.device}, head_dim {q.shape[-1]}); fix: {BACKENDS[name].fix}"
            )
    return BACKENDS[name].run(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale, deterministic=deterministic
    )
