"""Image preprocessing from a model's data config (size, channels, mean, std), in plain torch + PIL.

Training augmentation draws its randomness from a generator seeded by (seed, epoch, sample index),
so a sample's view is the same however the data is sharded, batched, or resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

if TYPE_CHECKING:
    from ..models import ViTConfig


@dataclass(frozen=True)
class DataConfig:
    """What a model expects of its input images."""

    img_size: tuple[int, int]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, self.in_chans):
                raise ValueError(
                    f"the model's {name} has {len(getattr(self, name))} values but it takes {self.in_chans} channels; "
                    f"give {name} one value per channel (or a single value) in its config"
                )

    @classmethod
    def of(cls, config: ViTConfig) -> DataConfig:
        """The data config of a model's ViTConfig."""
        return cls(tuple(config.img_size), config.in_chans, tuple(config.mean), tuple(config.std))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(C, H, W) or (B, C, H, W) in [0, 1] -> normalised by mean/std (broadcast when one value)."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std


def pil_to_tensor(image: Image.Image, in_chans: int) -> torch.Tensor:
    """A PIL image -> (C, H, W) float in [0, 1], converted to grey or RGB to match `in_chans`."""
    mode = {1: "L", 3: "RGB"}.get(in_chans)
    if mode is None:
        raise ValueError(f"images can be read for in_chans 1 (grey) or 3 (RGB), not {in_chans}")
    array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.copy()).permute(2, 0, 1)  # (H, W, C) -> (C, H, W)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) -> (C, *size), bilinear with antialiasing when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The random stream of one sample's augmentation in one epoch."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + index)


def random_resized_crop(x: torch.Tensor, size: tuple[int, int], gen: torch.Generator,
                        scale: tuple[float, float] = (0.35, 1.0)) -> torch.Tensor:
    """Inception-style crop: a random area fraction and aspect ratio, resized to `size`, random h-flip."""
    _, height, width = x.shape
    area = height * width * torch.empty(1).uniform_(*scale, generator=gen).item()
    log_ratio = torch.empty(1).uniform_(np.log(3 / 4), np.log(4 / 3), generator=gen).item()
    ratio = float(np.exp(log_ratio))
    h = min(height, max(1, round((area / ratio) ** 0.5)))
    w = min(width, max(1, round((area * ratio) ** 0.5)))
    top = torch.randint(0, height - h + 1, (1,), generator=gen).item()
    left = torch.randint(0, width - w + 1, (1,), generator=gen).item()
    x = resize(x[:, top : top + h, left : left + w], size)
    return x.flip(-1) if torch.rand(1, generator=gen).item() < 0.5 else x
