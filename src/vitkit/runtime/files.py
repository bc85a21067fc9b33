"""Atomic file writes: a file vitkit writes is either the old one or the whole new one, never half of it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    A failure (or a kill) before the rename leaves the old `path` as it was. The temporary file is flushed to
    disk before the rename and the directory after it, so a power cut cannot leave a renamed but empty file.
    The writer creates the file, so it gets the usual permissions (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # directories cannot be opened for fsync everywhere (Windows)
            _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
