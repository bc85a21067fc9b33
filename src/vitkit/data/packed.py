"""Data for packed (NaViT) training: images keep their aspect ratio, and each batch is packed into sequences."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..packing import PackedBatch, pack_images


@dataclass(frozen=True)
class PackCollate:
    """DataLoader `collate_fn`: a list of (image (C, H_i, W_i), label) -> (PackedBatch, labels (B,)), packed into
    sequences of `max_tokens` with `options` (the other arguments of `pack_images`: `for_model` takes a model's)."""

    max_tokens: int
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_model(cls, model: torch.nn.Module, max_tokens: int) -> PackCollate:
        """Packing as `model.pack` does it (patch size, prefix tokens, patch order, frames per patch)."""
        return cls(max_tokens, model.packing_options())

    def __call__(self, samples: list[tuple[torch.Tensor, int]]) -> tuple[PackedBatch, torch.Tensor]:
        images = [image for image, _ in samples]
        labels = torch.tensor([label for _, label in samples], dtype=torch.long)
        return pack_images(images, max_tokens=self.max_tokens, **self.options), labels
