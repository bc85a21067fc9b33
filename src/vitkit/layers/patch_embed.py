"""Image to patch tokens with a strided convolution (timm `patch_embed.proj` layout)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def to_2tuple(x: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    pair = (x, x) if isinstance(x, int) else tuple(x)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {x!r}")
    return pair  # type: ignore[return-value]


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H/p, W/p, D) patch grid, flattened to (B, N, D) unless `flatten=False`.

    With `strict_img_size` the input must be `img_size`; otherwise any size divisible by the patch
    is accepted. A size that is not divisible is zero-padded right and bottom with `dynamic_img_pad`,
    has its last pixels ignored with `crop_remainder` (timm's conv behaviour, e.g. SigLIP so400m at
    384 px with 14 px patches -> 27 x 27), and is an error otherwise.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        strict_img_size: bool = True,
        dynamic_img_pad: bool = False,
        crop_remainder: bool = False,
    ) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size, "img_size")
        self.patch_size = to_2tuple(patch_size, "patch_size")
        self.in_chans = in_chans
        self.strict_img_size = strict_img_size
        self.dynamic_img_pad = dynamic_img_pad
        self.crop_remainder = crop_remainder
        self.grid_size = self.grid_for(*self.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid an image of this size gives (after padding or cropping, as configured)."""
        ph, pw = self.patch_size
        if self.dynamic_img_pad:
            return -(-height // ph), -(-width // pw)
        if (height % ph or width % pw) and not self.crop_remainder:
            raise ValueError(
                f"image size {height}x{width} is not divisible by patch_size {ph}x{pw}; resize the images, "
                "or set dynamic_img_pad=True (zero-pad) or crop_remainder=True (ignore the last pixels)"
            )
        return height // ph, width // pw

    def forward(self, x: torch.Tensor, flatten: bool = True) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"images must be (batch, {self.in_chans}, height, width), got shape {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        if self.strict_img_size and (height, width) != self.img_size:
            raise ValueError(
                f"input size {height}x{width} does not match img_size {self.img_size[0]}x{self.img_size[1]}; "
                "resize the images or build the model with dynamic_img_size=True"
            )
        self.grid_for(height, width)  # raises for a size the configuration cannot take
        if self.dynamic_img_pad:
            ph, pw = self.patch_size
            x = F.pad(x, (0, (-width) % pw, 0, (-height) % ph))
        x = self.proj(x).permute(0, 2, 3, 1)  # (B, D, h, w) -> (B, h, w, D)
        return x.flatten(1, 2) if flatten else x
