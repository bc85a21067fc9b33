"""The bottom floor: atomic file writes, precisions, process groups and loader worker counts that every tool room
shares. It imports no other vitkit room, so any room may import it."""

from .distributed import DistEnv, all_sum, setup, teardown
from .files import atomic_path, write_text
from .inference import INFERENCE_PRECISIONS, InferencePrecision, inference_precision, prepare_inference
from .logs import without_log_message
from .precision import PRECISIONS, autocast, native_bf16, precision_dtype
from .workers import loader_workers

__all__ = [
    "INFERENCE_PRECISIONS",
    "PRECISIONS",
    "DistEnv",
    "InferencePrecision",
    "all_sum",
    "atomic_path",
    "autocast",
    "inference_precision",
    "loader_workers",
    "native_bf16",
    "precision_dtype",
    "prepare_inference",
    "setup",
    "teardown",
    "without_log_message",
    "write_text",
]
