"""Attention kernels behind one function and one layout contract: (B, H, N, D) in, (B, H, N, D) out."""

from .backends import (
    ALIASES,
    ANY_DEVICE,
    AUTO_ORDER,
    BACKEND_NAMES,
    BACKENDS,
    VARLEN_AUTO_ORDER,
    Backend,
    canonical_name,
    choose,
    register_backend,
)
from .capability import BackendUnavailableError, Capability, Request
from .choice import AttentionChoice
from .dispatch import (
    BackendStatus,
    backend_report,
    checkpoint_contexts,
    choose_varlen,
    scaled_dot_product_attention,
    use,
    varlen_attention,
)
from .math import attention_weights
from .segments import Segments

__all__ = [
    "ALIASES",
    "ANY_DEVICE",
    "AUTO_ORDER",
    "BACKENDS",
    "BACKEND_NAMES",
    "VARLEN_AUTO_ORDER",
    "AttentionChoice",
    "Backend",
    "BackendStatus",
    "BackendUnavailableError",
    "Capability",
    "Request",
    "Segments",
    "attention_weights",
    "backend_report",
    "canonical_name",
    "checkpoint_contexts",
    "choose",
    "choose_varlen",
    "register_backend",
    "scaled_dot_product_attention",
    "use",
    "varlen_attention",
]
