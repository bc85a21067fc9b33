"""Dropping one known message of a library's logger while a block runs, every other message still shown."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def without_log_message(logger: str, message: str) -> Iterator[None]:
    """Drop the records of `logger` (a logging name; "" is the root) whose text contains `message`, inside the
    block only."""
    def keep(record: logging.LogRecord) -> bool:
        return message not in record.getMessage()

    target = logging.getLogger(logger)
    target.addFilter(keep)
    try:
        yield
    finally:
        target.removeFilter(keep)
