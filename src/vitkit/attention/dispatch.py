"""The attention entry points, dense and packed, over one table: input checks, the scoped override, `auto`,
one error for a backend that cannot run (or, for a soft preference, one logged fallback), and the usability
report."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from .backends import BACKENDS, Backend, canonical_name, choose
from .capability import BackendUnavailableError, Request, cuda_capability
from .segments import Segments

# The backend (canonical name) and deterministic flag (None: the caller's) that `use` imposes in this
# thread / task; None outside every `use`. Dynamo guards on its value, so compiled code follows it too.
_SCOPE: ContextVar[tuple[str, bool | None] | None] = ContextVar("vitkit_attention_scope", default=None)
logger = logging.getLogger("vitkit.attention")


@contextlib.contextmanager
def use(backend: str, *, deterministic: bool | None = None) -> Iterator[None]:
    """Run every `scaled_dot_product_attention` / `varlen_attention` call in this scope on `backend`.

    It replaces whatever backend the callers pass (`use("auto")` lets `auto` choose for all of them);
    `deterministic`, when not None, replaces their flag too. The name is checked once, on entry
    (ValueError for an unknown one). Scopes nest, the innermost wins, and leaving one restores the
    previous state, also on an exception. The scope is this thread's or task's, not the process's. A
    named backend that cannot run a call still raises `BackendUnavailableError`.
    """
    with _scoped((canonical_name(backend), deterministic)):
        yield


@contextlib.contextmanager
def _scoped(scope: tuple[str, bool | None] | None) -> Iterator[None]:
    token = _SCOPE.set(scope)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def checkpoint_contexts() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    """`context_fn` for `torch.utils.checkpoint`: a block recomputed in backward runs under the `use` scope its
    forward ran under (backward usually runs outside that scope), so both passes run the same kernel."""
    return contextlib.nullcontext(), _scoped(_SCOPE.get())


@functools.lru_cache(maxsize=64)
def _log_fallback(name: str, why: str) -> None:
    """Say once per process (per backend and reason) that a preferred backend gave way to `auto`."""
    logger.warning("attention backend '%s' cannot run here (it %s); running 'auto' instead", name, why)


def _resolve(backend: str, deterministic: bool, fallback: bool, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             attn_mask: torch.Tensor | None, dropout_p: float, *, packed: bool) -> tuple[Backend, bool]:
    """The backend that runs this call and its deterministic flag: the scope's or the caller's, `auto`
    resolved. A named backend that cannot run the call raises instead of handing it to another, unless the
    caller's name is a soft preference (`fallback`); a `use` scope's name is always a hard one."""
    name = canonical_name(backend)
    scope = _SCOPE.get()
    if scope is not None:
        name, deterministic, fallback = scope[0], deterministic if scope[1] is None else scope[1], False
    req = Request.of(q, k, v, attn_mask, dropout_p, deterministic)
    if name == "auto":
        return BACKENDS[choose(req, packed=packed)], deterministic
    entry = BACKENDS[name]
    why = entry.reason(req, packed=packed)
    if why is None:
        return entry, deterministic
    if fallback:
        _log_fallback(name, why)
        return BACKENDS[choose(req, packed=packed)], deterministic
    raise BackendUnavailableError(
        f"attention backend '{name}' cannot run {'packed attention ' if packed else ''}here: it {why} "
        f"(inputs: {q.dtype} on {q.device}, head_dim {q.shape[-1]}); fix: {entry.fix}"
    )


@dataclass(frozen=True)
class BackendStatus:
    """One row of `backend_report`."""

    name: str
    usable: bool
    reason: str  # why not, or what it is when usable
    chosen: bool = False  # what `auto` would run


def backend_report(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    head_dim: int = 64,
    *,
    mask: str | None = None,
    dropout: bool = False,
    needs_grad: bool = False,
    deterministic: bool = False,
    packed: bool = False,
) -> list[BackendStatus]:
    """For each backend: can it run attention with these properties on this device, and if not, why.

    `packed` asks about `varlen_attention` instead, whose segments are the mask (so `mask` stays None).
    """
    if packed and mask is not None:
        raise ValueError("packed attention takes its mask from the segments; leave mask=None with packed=True")
    device = torch.device(device)
    req = Request(device.type, dtype, head_dim, mask=mask, dropout=dropout, needs_grad=needs_grad,
                  deterministic=deterministic, compute_capability=cuda_capability(device))
    chosen = choose(req, packed=packed)
    rows = []
    for name, backend in BACKENDS.items():
        why = backend.reason(req, packed=packed)
        text = backend.describe(packed=packed) if why is None else f"{why}; fix: {backend.fix}"
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
    fallback: bool = False,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v on (B, H, N, D) tensors, through the named (or fastest) backend.

    `attn_mask` is bool (True = attend) or additive, broadcastable to (B, H, N, M). Dropout is applied
    whenever `dropout_p > 0`: callers pass 0 outside training. A named backend that cannot run these
    inputs raises `BackendUnavailableError` with the reason and the fix; `auto` never does where
    `math` could run. With `fallback` the name is only a preference: `auto` runs instead, and a warning
    says so once (for a choice read from a file, not asked for). Inside `use(...)` the scope's backend
    runs instead of `backend`, and is never replaced.
    """
    _check_inputs(q, k, v, attn_mask, dropout_p)
    entry, deterministic = _resolve(backend, deterministic, fallback, q, k, v, attn_mask, dropout_p, packed=False)
    return entry.run(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale, deterministic=deterministic)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    segments: Segments,
    *,
    backend: str = "auto",
    dropout_p: float = 0.0,
    scale: float | None = None,
    deterministic: bool = False,
    fallback: bool = False,
) -> torch.Tensor:
    """Attention on (B, H, N, D) q and (B, H, M, D) k, v where each query sees only keys of its own segment.

    Same contract as `scaled_dot_product_attention` otherwise. Each backend runs it on its varlen kernel
    where it has one (`flash`, `xformers`, `flex`), else under the segments' dense block-diagonal mask;
    `auto` picks the fastest usable one (`flash` -> `xformers` -> `sdpa` on CUDA, `sdpa` on CPU).
    """
    if not isinstance(segments, Segments):
        raise TypeError(f"segments must be a vitkit.attention.Segments, got {type(segments).__name__}")
    _check_inputs(q, k, v, None, dropout_p)
    if segments.q_ids.shape != (q.shape[0], q.shape[2]) or segments.kv_ids.shape != (k.shape[0], k.shape[2]):
        raise ValueError(
            f"segment ids {tuple(segments.q_ids.shape)} / {tuple(segments.kv_ids.shape)} do not match q "
            f"(B, N) = {(q.shape[0], q.shape[2])} and k (B, M) = {(k.shape[0], k.shape[2])}"
        )
    entry, deterministic = _resolve(backend, deterministic, fallback, q, k, v, None, dropout_p, packed=True)
    return entry.run_packed(q, k, v, segments, dropout_p=dropout_p, scale=scale, deterministic=deterministic)


def choose_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                  deterministic: bool = False) -> str:
    """The backend `auto` runs packed attention on for these inputs."""
    return choose(Request.of(q, k, v, None, dropout_p, deterministic), packed=True)
