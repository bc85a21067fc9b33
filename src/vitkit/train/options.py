"""Everything a training run is told, validated up front so a bad value fails before any file is written."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import Augment, BatchMix
from ..models import INTERPOLATIONS, parse_overrides
from ..runtime import PRECISIONS, loader_workers


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
    layer_decay: float | None = None  # per-block lr scale (BEiT / timm): head 1.0, block L d, ..., embedding d^(L+1)
    clip_grad: float | None = None  # max global gradient norm
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
    workers: int | str = "auto"  # auto: min(cores, 8) for folders, 0 for the in-memory digits
    seed: int = 0
    device: str | None = None
    out: str | None = None
    save_every: int = 0  # steps between periodic checkpoints; 0 = each epoch end only
    fsdp: bool = False
    deterministic: bool = False
    packing: bool = False  # NaViT: images keep their aspect ratio and are packed into token sequences
    max_tokens: int | None = None  # tokens per packed sequence (default: four full-size images)
    max_patches: int | None = None  # NaFlex patch budget per packed image (SigLIP2's sizing rule)
    token_drop: float = 0.0  # NaViT token dropping rate in packed training
    # Augmentation (`Augment`'s fields, flat as the command line has them); the in-memory digits take none of it.
    aa: str = Augment.aa
    reprob: float = Augment.reprob
    color_jitter: float = Augment.color_jitter
    scale: tuple[float, float] = Augment.scale
    ratio: tuple[float, float] = Augment.ratio
    hflip: float = Augment.hflip
    interpolation: str | None = None  # None: the model's (its config.json)
    crop_pct: float | None = None  # evaluation's centre crop; None: the model's
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    freeze: tuple[str, ...] = ()  # parameter-name patterns that do not train
    linear_probe: bool = False  # train only the head and fc_norm
    overrides: tuple[str, ...] = ()  # model config fields, FIELD=VALUE (--set)
    skip_unreadable: bool = False

    def __post_init__(self) -> None:
        for name in ("scale", "ratio", "freeze", "overrides"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # JSON gives lists
        if self.workers != "auto" and (not isinstance(self.workers, int) or isinstance(self.workers, bool)):
            raise ValueError(f"--workers must be 'auto' or an integer >= 0, got {self.workers!r}")
        for name in ("epochs", "batch_size", "grad_accum"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("grad_checkpointing", "save_every", "seed", *(("workers",) if self.workers != "auto" else ())):
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
        if self.max_patches is not None and (not isinstance(self.max_patches, int) or self.max_patches <= 0):
            raise ValueError(f"--max-patches must be a positive integer, got {self.max_patches!r}")
        if not self.packing and (self.max_tokens is not None or self.token_drop):
            raise ValueError("--max-tokens and --token-drop need --packing")
        if not self.packing and self.max_patches is not None:
            raise ValueError("--max-patches (a NaFlex patch budget per packed image) needs --packing")
        _ = self.augment  # building them checks --aa, --reprob, --color-jitter, --scale, --ratio, --hflip ...
        BatchMix(2, mixup=self.mixup, cutmix=self.cutmix, prob=self.mixup_prob, switch_prob=self.mixup_switch_prob)
        if self.packing and (self.mixup or self.cutmix):
            raise ValueError("--mixup and --cutmix mix images of one size; they do not work with --packing")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"--layer-decay must be in (0, 1], got {self.layer_decay}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"--clip-grad must be > 0, got {self.clip_grad}")
        if not 0.0 < self.model_ema_decay < 1.0:
            raise ValueError(f"--model-ema-decay must be in (0, 1), got {self.model_ema_decay}")
        if self.model_ema and self.fsdp:
            raise ValueError("--model-ema keeps a full copy of the model; it does not work with --fsdp")
        if self.crop_pct is not None and not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"--crop-pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        parse_overrides(self.overrides)

    @property
    def augment(self) -> Augment:
        """The training augmentation these options ask for."""
        return Augment(self.aa, self.reprob, self.color_jitter, self.scale, self.ratio, self.hflip)

    def loader_workers(self, cores: int | None = None) -> int:
        """DataLoader workers: as given, or with 'auto' min(cores, 8) for folders and 0 for the in-memory digits."""
        return loader_workers(self.workers, self.data, cores)

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
