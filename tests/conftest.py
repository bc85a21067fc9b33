"""Fixtures shared by test files: `hub_server`, the local stand-in hub (tests/hub_helpers.py) that huggingface_hub
talks to, with the cache in the test's temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_helpers import HubServer, isolate_hub


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    isolate_hub(monkeypatch, tmp_path / "cache")
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        yield hub
