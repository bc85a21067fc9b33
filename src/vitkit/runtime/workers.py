"""How many DataLoader worker processes to start, one rule for training and embedding."""

from __future__ import annotations

import os


def loader_workers(workers: int | str, data: str, cores: int | None = None) -> int:
    """DataLoader workers: `workers` as given, or for 'auto' min(cores, 8) for image files and 0 for the in-memory
    digits (ready-made tensors: processes would only add start-up and copies)."""
    if workers != "auto":
        return int(workers)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if data == "digits" else max(1, min(cores, 8))
