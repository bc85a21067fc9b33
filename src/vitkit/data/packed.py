"""Data for packed (NaViT) training: images keep their aspect ratio, and each batch is packed into sequences."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..packing import PackedBatch, pack_images
from .transforms import resize


def fit_within(x: torch.Tensor, max_side: int) -> torch.Tensor:
    """(C, H, W) shrunk so its longer side is at most `max_side`, aspect ratio kept (never enlarged)."""
    height, width = x.shape[-2:]
    longest = max(height, width)
    if longest <= max_side:
        return x
    size = (max(1, round(height * max_side / longest)), max(1, round(width * max_side / longest)))
    return resize(x, size)


def random_aspect_crop(x: torch.Tensor, gen: torch.Generator, scale: tuple[float, float] = (0.35, 1.0)) -> torch.Tensor:
    """A random crop of `scale` of the area with the image's own aspect ratio, flipped half the time."""
    _, height, width = x.shape
    side = torch.empty(1).uniform_(*scale, generator=gen).item() ** 0.5
    h, w = max(1, round(height * side)), max(1, round(width * side))
    top = torch.randint(0, height - h + 1, (1,), generator=gen).item()
    left = torch.randint(0, width - w + 1, (1,), generator=gen).item()
    x = x[:, top : top + h, left : left + w]
    return x.flip(-1) if torch.rand(1, generator=gen).item() < 0.5 else x


def default_max_tokens(img_size: tuple[int, int], patch_size: tuple[int, int], num_prefix_tokens: int) -> int:
    """Room for four images of the model's full size per sequence."""
    side = max(img_size)
    per_image = -(-side // patch_size[0]) * -(-side // patch_size[1]) + num_prefix_tokens
    return 4 * per_image


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
