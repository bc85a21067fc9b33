"""Data for packed (NaViT) training: images keep their aspect ratio, and each batch is packed into sequences."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..packing import PackedBatch, pack_images


@dataclass(frozen=True)
class PackCollate:
    """DataLoader `collate_fn`: a list of (image (C, H_i, W_i), label) -> (PackedBatch, labels (B,))."""

    patch_size: tuple[int, int]
    max_tokens: int
    num_prefix_tokens: int = 0

    def __call__(self, samples: list[tuple[torch.Tensor, int]]) -> tuple[PackedBatch, torch.Tensor]:
        images = [image for image, _ in samples]
        labels = torch.tensor([label for _, label in samples], dtype=torch.long)
        batch = pack_images(images, patch_size=self.patch_size, max_tokens=self.max_tokens,
                            num_prefix_tokens=self.num_prefix_tokens)
        return batch, labels
