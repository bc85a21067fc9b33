"""The table of attention backends: what each can run, how it runs dense and packed attention, where `auto` tries it.

Everything else follows from the table: the names `canonical_name` accepts, `auto`'s order per device,
the usability report. A new kernel is one `Backend(...)` entry here (or `register_backend`) plus its
kernel module.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from . import flash, flex, math, sdpa, xformers
from .capability import Capability, Request
from .segments import Segments

# (q, k, v, *, attn_mask, dropout_p, scale, deterministic) -> out, all (B, H, N, D)
Runner = Callable[..., torch.Tensor]
# (q, k, v, segments, *, dropout_p, scale, deterministic) -> out, all (B, H, N, D)
VarlenRunner = Callable[..., torch.Tensor]
ANY_DEVICE = "*"  # in a rank map: every device type the map does not name


@dataclass(frozen=True)
class Backend:
    """An attention kernel: what it can run, how to run it (dense and packed), and how to get it when it can't.

    `auto_rank` / `varlen_rank` map a device type (or `ANY_DEVICE`) to the backend's place in `auto`'s
    order for dense / packed attention there: lower is tried first, and where it has no rank `auto` never
    picks it (it still runs by name).
    """

    name: str
    capability: Capability
    run: Runner
    fix: str
    about: str | Callable[[], str]  # what it is, for the report
    extra_reason: Callable[[Request], str | None] | None = None  # package or device-specific limits
    run_varlen: VarlenRunner | None = None  # None: `run` under the segments' dense block-diagonal mask
    auto_rank: Mapping[str, int] = field(default_factory=dict)
    varlen_rank: Mapping[str, int] = field(default_factory=dict)

    def reason(self, req: Request, *, packed: bool = False) -> str | None:
        """Why this backend cannot run `req` (as packed attention when `packed`), or None when it can."""
        if packed:  # the segments are the mask: a dense one unless the kernel takes them itself
            req = dataclasses.replace(req, mask=None if self.run_varlen else "bool")
        return self.capability.reason(req) or (self.extra_reason(req) if self.extra_reason else None)

    def describe(self, *, packed: bool = False) -> str:
        """What it is (and how it packs sequences), for the report's usable rows."""
        about = self.about() if callable(self.about) else self.about
        if not packed:
            return about
        return f"{about}; packed: {'its varlen kernel' if self.run_varlen else 'a dense block-diagonal mask'}"

    def run_packed(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: Segments, *,
                   dropout_p: float, scale: float | None, deterministic: bool) -> torch.Tensor:
        """Packed attention on this kernel: its varlen runner, else `run` under the dense block-diagonal mask."""
        if self.run_varlen is not None:
            return self.run_varlen(q, k, v, segments, dropout_p=dropout_p, scale=scale, deterministic=deterministic)
        return self.run(
            q, k, v, attn_mask=segments.dense_mask, dropout_p=dropout_p, scale=scale, deterministic=deterministic
        )


def _sdpa_sub(name: str) -> Backend:
    return Backend(
        name=f"sdpa:{name}",
        capability=sdpa.SUB_CAPABILITIES[name],
        run=functools.partial(sdpa.run, sub_kernel=name),
        fix=sdpa.FIX,
        about=f"SDPA pinned to its {name} kernel",
        extra_reason=sdpa.SUB_REASONS.get(name),
    )


_LAST = 1_000  # math: after every other backend, on every device
BACKENDS: dict[str, Backend] = {
    "math": Backend(
        "math", math.CAPABILITY, math.run, math.FIX, math.ABOUT,
        auto_rank={ANY_DEVICE: _LAST}, varlen_rank={ANY_DEVICE: _LAST},
    ),
    "sdpa": Backend(
        "sdpa", sdpa.CAPABILITY, sdpa.run, sdpa.FIX, sdpa.ABOUT, run_varlen=sdpa.run_varlen,
        auto_rank={"cuda": 1, ANY_DEVICE: 0}, varlen_rank={"cuda": 2, ANY_DEVICE: 0},
    ),
    "flash": Backend(
        "flash", flash.CAPABILITY, flash.run, flash.FIX, flash.about, flash.package_reason,
        run_varlen=flash.run_varlen, auto_rank={"cuda": 0}, varlen_rank={"cuda": 0},
    ),
    "xformers": Backend(
        "xformers", xformers.CAPABILITY, xformers.run, xformers.FIX, xformers.ABOUT, xformers.package_reason,
        run_varlen=xformers.run_varlen, auto_rank={"cuda": 2}, varlen_rank={"cuda": 1},
    ),
    # flex compiles per shape: never ahead of SDPA's fused CPU kernel, and never `auto`'s pick for packed
    # attention on CPU, where it recompiles for every packed shape.
    "flex": Backend(
        "flex", flex.CAPABILITY, flex.run, flex.FIX, flex.ABOUT,
        run_varlen=flex.run_varlen, auto_rank={"cuda": 3, "cpu": 1}, varlen_rank={"cuda": 3},
    ),
    **{f"sdpa:{name}": _sdpa_sub(name) for name in sdpa.SUB_KERNELS},
}
# The seed's names, kept so its configs keep working.
ALIASES = {"scaled_dot_product": "math", "flash_attention": "flash", "flash_attn": "flash", "torch": "sdpa"}

# Views derived from the table, refreshed in place by `register_backend`.
BACKEND_NAMES: list[str] = []
AUTO_ORDER: dict[str, tuple[str, ...]] = {}  # device type -> what `auto` tries, fastest first
VARLEN_AUTO_ORDER: dict[str, tuple[str, ...]] = {}  # the same for packed attention


def _order(device: str, rank_of: Callable[[Backend], Mapping[str, int]]) -> tuple[str, ...]:
    ranked = []
    for name, backend in BACKENDS.items():
        ranks = rank_of(backend)
        rank = ranks.get(device, ranks.get(ANY_DEVICE))
        if rank is not None:
            ranked.append((rank, name))
    return tuple(name for _, name in sorted(ranked, key=lambda pair: pair[0]))  # ties: table order


def _refresh() -> None:
    """Rebuild the derived views and forget memoised `auto` choices after the table changed."""
    BACKEND_NAMES[:] = ["auto", *BACKENDS]
    named = dict.fromkeys(d for b in BACKENDS.values() for d in (*b.auto_rank, *b.varlen_rank) if d != ANY_DEVICE)
    for view, rank_of in ((AUTO_ORDER, lambda b: b.auto_rank), (VARLEN_AUTO_ORDER, lambda b: b.varlen_rank)):
        view.clear()
        view.update({device: _order(device, rank_of) for device in [*named, ANY_DEVICE]})
    _cached_first_usable.cache_clear()


def register_backend(backend: Backend) -> Callable[[], None]:
    """Add `backend` to the table, or replace the entry of its name; returns a function that undoes it.

    From then on `canonical_name`, `auto` (by the entry's ranks), `backend_report` and both entry
    points know it.
    """
    if backend.name == "auto" or backend.name in ALIASES:
        raise ValueError(f"{backend.name!r} names something else already; give the backend another name")
    previous = BACKENDS.get(backend.name)
    BACKENDS[backend.name] = backend
    _refresh()

    def undo() -> None:
        if previous is None:
            del BACKENDS[backend.name]
        else:
            BACKENDS[backend.name] = previous
        _refresh()

    return undo


def canonical_name(backend: str) -> str:
    """Resolve aliases; raise ValueError naming the choices for an unknown name."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    name = ALIASES.get(backend, backend)
    if name != "auto" and name not in BACKENDS:
        choices = ", ".join([*BACKEND_NAMES, *ALIASES])
        raise ValueError(f"unknown attention backend {backend!r}; choose one of: {choices}")
    return name


def _first_usable(req: Request, packed: bool) -> str:
    orders = VARLEN_AUTO_ORDER if packed else AUTO_ORDER
    for name in orders.get(req.device_type, orders[ANY_DEVICE]):
        if BACKENDS[name].reason(req, packed=packed) is None:
            return name
    return "math"


_cached_first_usable = functools.lru_cache(maxsize=256)(_first_usable)


def choose(req: Request, *, packed: bool = False) -> str:
    """The backend `auto` runs for `req` (as packed attention when `packed`): the first usable one in this
    device's order."""
    # Under torch.compile the choice is traced once into the graph; eagerly it is memoised per request kind.
    return _first_usable(req, packed) if torch.compiler.is_compiling() else _cached_first_usable(req, packed)


_refresh()
