"""What every benchmark's settings share: precision, timed and untimed steps, device, seed, torch threads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..runtime import precision_dtype


def check_ints(owner: object, limits: dict[str, int]) -> None:
    """ValueError naming the first attribute of `owner` that is not an integer >= its limit (None allowed
    for 'threads', meaning torch's default)."""
    for name, low in limits.items():
        value = getattr(owner, name)
        if name == "threads" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class BenchSettings:
    """The fields every benchmark takes, validated on creation (ValueError naming the argument); each benchmark's
    settings add their own fields and checks, and may change the defaults."""

    precision: str = "fp32"
    steps: int = 10
    warmup: int = 2
    device: str = "auto"
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        check_ints(self, {"steps": 1, "warmup": 0, "threads": 1})
        self.check_precision()

    def check_precision(self) -> None:
        """ValueError unless `precision` is one this benchmark runs: training's names (autocast) by default."""
        precision_dtype(self.precision)

    def record(self, device: torch.device) -> dict[str, Any]:
        """The settings as a report records them: the benchmark's own first (what it measures), then the shared ones,
        with the device it resolved to."""
        values = dataclasses.asdict(self)
        shared = {field.name for field in dataclasses.fields(BenchSettings)}
        own = {name: value for name, value in values.items() if name not in shared}
        return {**own, **{name: values[name] for name in values if name in shared}, "device": str(device)}
