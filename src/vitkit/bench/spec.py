"""The orders a benchmark worker process takes: one candidate, one model config, how to time it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MODES = ("infer", "train")


@dataclass(frozen=True)
class CandidateSpec:
    """Everything one worker needs: which candidate, which model config, and how to time it."""

    candidate: str  # "vitkit" or a key of PEERS
    config: dict[str, Any]  # the model's config dict (as in config.json)
    modes: tuple[str, ...] = ("infer",)
    attention: str = "auto"  # vitkit only
    batch_size: int = 8
    precision: str = "fp32"
    device: str = "cpu"
    compile: bool = False
    grad_checkpointing: int = 0
    steps: int = 10
    warmup: int = 2
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None: torch's default

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidateSpec:
        return cls(**{**data, "modes": tuple(data["modes"])})
