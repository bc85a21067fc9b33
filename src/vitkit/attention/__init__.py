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
from .varlen import VARLEN_AUTO_ORDER, Segments, choose_varlen, varlen_attention

__all__ = [
    "ALIASES",
    "AUTO_ORDER",
    "BACKENDS",
    "BACKEND_NAMES",
    "VARLEN_AUTO_ORDER",
    "BackendStatus",
    "BackendUnavailableError",
    "Capability",
    "Request",
    "Segments",
    "attention_weights",
    "backend_report",
    "canonical_name",
    "choose",
    "choose_varlen",
    "scaled_dot_product_attention",
    "varlen_attention",
]
