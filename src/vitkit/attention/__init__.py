"""Attention kernels behind one function and one layout contract: (B, H, N, D) in, (B, H, N, D) out."""

from .capability import BackendUnavailableError, Capability, Request
from .dispatch import (
    ALIASES,
    AUTO_ORDER,
    BACKEND_NAMES,
    BACKENDS,
    BackendStatus,
    backend_report,
    canonical_name,
    choose,
    scaled_dot_product_attention,
)
from .math import attention_weights

__all__ = [
    "ALIASES",
    "AUTO_ORDER",
    "BACKENDS",
    "BACKEND_NAMES",
    "BackendStatus",
    "BackendUnavailableError",
    "Capability",
    "Request",
    "attention_weights",
    "backend_report",
    "canonical_name",
    "choose",
    "scaled_dot_product_attention",
]
