"""Mixup and CutMix of a training batch, as timm's `Mixup` in batch mode, from torchvision's `MixUp` and `CutMix`."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from .transforms import seeded


class BatchMix:
    """With probability `prob` a batch is mixed with itself rolled by one: by mixup (Beta(`mixup`, `mixup`)) or by
    cutmix (Beta(`cutmix`, `cutmix`), the box's area setting the label weight); when both are on, cutmix is chosen
    with `switch_prob`. Targets come back soft, (B, num_classes), each row summing to 1; label smoothing is folded
    in by the loss (`F.cross_entropy(logits, targets, label_smoothing=...)`, timm's smoothed soft targets)."""

    def __init__(self, num_classes: int, *, mixup: float = 0.0, cutmix: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5) -> None:
        for name, value in (("--mixup", mixup), ("--cutmix", cutmix)):
            if value < 0:
                raise ValueError(f"{name} is a Beta distribution's alpha, >= 0 (0 = off), got {value}")
        for name, value in (("--mixup-prob", prob), ("--mixup-switch-prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {value}")
        self.num_classes, self.prob, self.switch_prob = num_classes, prob, switch_prob
        self.mixup = v2.MixUp(alpha=mixup, num_classes=num_classes) if mixup > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix, num_classes=num_classes) if cutmix > 0 else None

    @property
    def active(self) -> bool:
        return (self.mixup is not None or self.cutmix is not None) and self.prob > 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, C, H, W), labels (B,)) -> (mixed images, soft targets (B, num_classes)); every random choice
        is drawn from a stream seeded by `seed`, so a resumed run mixes its batches as the first run did."""
        return seeded(self._mix, images, labels, seed=seed)

    def _mix(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active or torch.rand(()).item() >= self.prob:
            return images, torch.nn.functional.one_hot(labels, self.num_classes).float()
        use_cutmix = self.cutmix is not None and (self.mixup is None or torch.rand(()).item() < self.switch_prob)
        return (self.cutmix if use_cutmix else self.mixup)(images, labels)
