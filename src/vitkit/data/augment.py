"""Training augmentation as timm's train.py spells it (`--aa`, `--reprob`, `--color-jitter`, `--scale`, `--ratio`,
`--hflip`), built from torchvision.transforms.v2."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import v2

from ..models import INTERPOLATIONS as NAMES

# A model config's interpolation name -> torchvision's mode.
INTERPOLATIONS = {name: v2.InterpolationMode(name) for name in NAMES}


class RandAugment(v2.RandAugment):
    """torchvision's RandAugment run as timm's: `ops` draws of an op (with replacement), each applied with
    probability `prob` (timm's `p`, 0.5); `magnitude` m on a 0..10 scale (timm's `m9` = 90% of each op's range);
    with `mstd` > 0 each image draws its magnitude from N(m, mstd), clipped to [0, 10] (timm draws it per op).
    The ops are torchvision's; their strength grows with the magnitude (timm's `inc1` variants)."""

    _BINS = 101  # magnitude in steps of 0.1 on timm's 0..10 scale

    def __init__(self, ops: int, magnitude: float, mstd: float, prob: float = 0.5,
                 interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR) -> None:
        super().__init__(num_ops=ops, magnitude=round(magnitude * 10), num_magnitude_bins=self._BINS,
                         interpolation=interpolation)
        self.ops, self.prob, self.mean_magnitude, self.mstd = ops, prob, magnitude, mstd

    def forward(self, *inputs: Any) -> Any:
        # k of the `ops` draws apply: drawing k ~ Binomial(ops, prob) and then k ops is the same distribution
        self.num_ops = int((torch.rand(self.ops) < self.prob).sum())
        if self.mstd > 0:
            drawn = self.mean_magnitude + self.mstd * torch.randn(()).item()
            self.magnitude = round(min(10.0, max(0.0, drawn)) * 10)
        return super().forward(*inputs)


def _fields(spec: str, allowed: dict[str, type]) -> dict[str, Any]:
    """'rand-m9-mstd0.5-inc1' -> {'m': 9, 'mstd': 0.5, 'inc': 1}; ValueError naming an unknown or bad field."""
    values: dict[str, Any] = {}
    for part in spec.split("-")[1:]:
        key = next((k for k in sorted(allowed, key=len, reverse=True) if part.startswith(k)), None)
        if key is None:
            raise ValueError(f"--aa {spec!r}: unknown field {part!r}; {spec.split('-')[0]} takes "
                             f"{', '.join(k + '<number>' for k in allowed)}")
        try:
            values[key] = allowed[key](part[len(key):])
        except ValueError:
            raise ValueError(f"--aa {spec!r}: {part!r} needs a number after {key!r}") from None
    return values


def auto_augment(spec: str) -> v2.Transform | None:
    """timm's `--aa` spelling -> a torchvision transform: 'rand-m9-n2-mstd0.5-inc1[-p0.5]', 'trivial',
    'augmix[-m3-w3-d-1-a1]' or 'none'. Its rotations and shears resample bilinearly (on PIL images and tensors
    alike; torchvision has no bicubic affine for tensors)."""
    interpolation = v2.InterpolationMode.BILINEAR
    kind = spec.split("-")[0]
    if spec in ("none", ""):
        return None
    if kind == "rand":
        f = _fields(spec, {"m": float, "n": int, "mstd": float, "inc": int, "p": float})
        if f.get("inc", 1) != 1:
            raise ValueError(f"--aa {spec!r}: torchvision's ops are the increasing ones (inc1); drop 'inc0'")
        if not 0 <= f.get("m", 9) <= 10 or f.get("n", 2) < 0 or f.get("mstd", 0) < 0 or not 0 <= f.get("p", 0.5) <= 1:
            raise ValueError(f"--aa {spec!r}: m must be in [0, 10], n >= 0, mstd >= 0, p in [0, 1]")
        return RandAugment(f.get("n", 2), f.get("m", 9), f.get("mstd", 0.0), f.get("p", 0.5), interpolation)
    if spec == "trivial":
        return v2.TrivialAugmentWide(interpolation=interpolation)
    if kind == "augmix":
        f = _fields(spec, {"m": int, "w": int, "d": int, "a": float})
        return v2.AugMix(severity=f.get("m", 3), mixture_width=f.get("w", 3), chain_depth=f.get("d", -1),
                         alpha=f.get("a", 1.0), interpolation=interpolation)
    raise ValueError(f"--aa must be rand-m<M>[-n<N>][-mstd<S>][-inc1][-p<P>], trivial, augmix[-m<M>-w<W>-d<D>] or "
                     f"none, got {spec!r}")


@dataclass(frozen=True)
class Augment:
    """How training images are varied (timm train.py's options and defaults, colour jitter off unless asked)."""

    aa: str = "none"
    reprob: float = 0.0
    color_jitter: float = 0.0
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(self.scale))
        object.__setattr__(self, "ratio", tuple(self.ratio))
        auto_augment(self.aa)  # a bad spelling fails here, before any run starts
        for name in ("reprob", "hflip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name} is a probability in [0, 1], got {getattr(self, name)}")
        if self.color_jitter < 0:
            raise ValueError(f"--color-jitter must be >= 0, got {self.color_jitter}")
        lo, hi = self.scale
        if len(self.scale) != 2 or not 0 < lo <= hi <= 1:
            raise ValueError(f"--scale takes two area fractions 0 < MIN <= MAX <= 1, got {self.scale}")
        if len(self.ratio) != 2 or not 0 < self.ratio[0] <= self.ratio[1] or not all(map(math.isfinite, self.ratio)):
            raise ValueError(f"--ratio takes two aspect ratios 0 < MIN <= MAX, got {self.ratio}")

    @property
    def colour_or_aa(self) -> bool:
        """Whether it changes pixel values (which the 8x8 in-memory digits do not take)."""
        return self.aa != "none" or self.reprob > 0 or self.color_jitter > 0
