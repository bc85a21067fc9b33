"""A model's attention preference: the one place its layers learn which kernel to run, at call time."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .backends import BACKENDS, canonical_name
from .capability import Request, cuda_capability
from .dispatch import scaled_dot_product_attention, varlen_attention
from .segments import Segments


@dataclass(frozen=True)
class AttentionChoice:
    """Which kernel attention runs on: a backend name ('auto' picks per call), deterministic kernels or not, and
    whether the name is a request or only a preference.

    A request (`fallback=False`: asked for in code or on the command line) raises `BackendUnavailableError` where
    the backend cannot run. A preference (`fallback=True`: read from a file written elsewhere) hands such a call to
    `auto`, with one logged line. A `vitkit.attention.use(...)` scope overrides either. The choice is run-time
    state, never architecture: a model holds one (`VisionTransformer.set_attention`) and passes it to its layers
    with each call.
    """

    backend: str = "auto"
    deterministic: bool = False
    fallback: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.backend, str):  # as a config value would be: a ValueError naming the argument
            raise ValueError(f"attention backend must be a name such as 'auto' or 'sdpa', got {self.backend!r}")
        object.__setattr__(self, "backend", canonical_name(self.backend))
        for name in ("deterministic", "fallback"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | Segments | None = None, *, dropout_p: float = 0.0,
               scale: float | None = None) -> torch.Tensor:
        """Attention on (B, H, N, D) q and (B, H, M, D) k, v under this choice; `mask` is a mask tensor, or
        `Segments` for packed sequences (`varlen_attention`)."""
        common = dict(backend=self.backend, dropout_p=dropout_p, scale=scale, deterministic=self.deterministic,
                      fallback=self.fallback)
        if isinstance(mask, Segments):
            return varlen_attention(q, k, v, mask, **common)
        return scaled_dot_product_attention(q, k, v, attn_mask=mask, **common)

    def reason_here(self, device: torch.device | str, dtype: torch.dtype, head_dim: int) -> str | None:
        """Why the backend cannot run unmasked inference attention on `device` in `dtype`; None when it can (and
        for 'auto', which always can)."""
        if self.backend == "auto":
            return None
        device = torch.device(device)
        request = Request(device.type, dtype, head_dim, deterministic=self.deterministic,
                          compute_capability=cuda_capability(device))
        return BACKENDS[self.backend].reason(request)
