"""The bottom floor: atomic file writes, precisions, process groups and loader worker counts that every tool room
shares. It imports no other vitkit room, so any room may import it."""

from .distributed import DistEnv, all_sum, setup, teardown
from .files import atomic_path, write_text
from .precision import PRECISIONS, autocast, native_bf16, precision_dtype, resolve_precision
from .workers import loader_workers

__all__ = [
    "PRECISIONS",
    "DistEnv",
    "all_sum",
    "atomic_path",
    "autocast",
    "loader_workers",
    "native_bf16",
    "precision_dtype",
    "resolve_precision",
    "setup",
    "teardown",
    "write_text",
]
