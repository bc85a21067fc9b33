"""Everything a training run is told, validated up front so a bad value fails before any file is written."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .precision import PRECISIONS


@dataclass(frozen=True)
class TrainOptions:
    """A run's settings; saved as train_options.json so `--resume` continues the same run."""

    model: str = "vit_digits"
    pretrained: str | None = None
    data: str = "digits"
    val_split: float | None = None
    img_size: int | None = None
    epochs: int = 30
    batch_size: int = 64  # global: split across processes and accumulation steps
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 3.0
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    drop_path: float | None = None
    precision: str = "fp32"
    grad_checkpointing: int = 0
    attention: str = "auto"
    compile: bool = False
    grad_accum: int = 1
    workers: int = 0
    seed: int = 0
    device: str | None = None
    out: str | None = None
    save_every: int = 0  # steps between periodic checkpoints; 0 = each epoch end only
    fsdp: bool = False
    deterministic: bool = False
    packing: bool = False  # NaViT: images keep their aspect ratio and are packed into token sequences
    max_tokens: int | None = None  # tokens per packed sequence (default: four full-size images)
    token_drop: float = 0.0  # NaViT token dropping rate in packed training

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("workers", "grad_checkpointing", "save_every", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"--batch-size {self.batch_size} must be divisible by --grad-accum {self.grad_accum}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.val_split is not None and not 0.0 < self.val_split < 1.0:
            raise ValueError(f"--val-split must be in (0, 1), got {self.val_split}")
        if self.img_size is not None and self.img_size <= 0:
            raise ValueError(f"--img-size must be positive, got {self.img_size}")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens <= 0):
            raise ValueError(f"--max-tokens must be a positive integer, got {self.max_tokens!r}")
        if not 0.0 <= self.token_drop < 1.0:
            raise ValueError(f"--token-drop must be in [0, 1), got {self.token_drop}")
        if not self.packing and (self.max_tokens is not None or self.token_drop):
            raise ValueError("--max-tokens and --token-drop need --packing")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_file(cls, path: Path) -> TrainOptions:
        """The options a run saved; ValueError naming the file when it is not what vitkit wrote."""
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); it is not a vitkit run's options file") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path} holds {type(data).__name__}, not a JSON object of training options")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{path} has options this vitkit does not know: {', '.join(unknown)}; remove them or "
                             "upgrade vitkit")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainOptions:
        return dataclasses.replace(self, **changes)
