"""Image to patch tokens: a strided convolution (timm `patch_embed.proj` layout) or vit-pytorch's norm-linear-norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _positive(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def to_2tuple(x: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """(h, w) from an int or a pair; ValueError naming `name` for anything else (bools, floats, strings)."""
    pair = (x, x) if isinstance(x, int) else tuple(x) if isinstance(x, tuple | list) else ()
    if len(pair) != 2 or not all(_positive(v) for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them (height, width), got {x!r}")
    return pair  # type: ignore[return-value]


def check_images(x: object, in_chans: int, weight: torch.Tensor) -> None:
    """TypeError / ValueError saying what is wrong with an image batch for a model whose first weight is
    `weight`, and how to fix it, before torch fails somewhere deeper with a less helpful message."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (batch, {in_chans}, height, width), got "
                        f"{type(x).__name__}; convert with torch.as_tensor(...)")
    if x.dim() != 4:
        hint = "; add the batch dimension with x.unsqueeze(0)" if x.dim() == 3 else ""
        raise ValueError(f"images must be 4-D (batch, {in_chans}, height, width), got shape {tuple(x.shape)}{hint}")
    if x.shape[1] != in_chans:
        raise ValueError(f"images must be (batch, {in_chans}, height, width): they have {x.shape[1]} channels but "
                         f"the model takes in_chans={in_chans}; convert the images to {in_chans} channels or "
                         f"build the model with in_chans={x.shape[1]}")
    if x.shape[0] == 0:
        raise ValueError("images is an empty batch (batch size 0); pass at least one image")
    if not x.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got {x.dtype}; convert with x.float() "
                        "(uint8 pixels: x.float() / 255, then normalise with the model's mean and std)")
    if x.device != weight.device:
        raise ValueError(f"images are on {x.device} but the model is on {weight.device}; move one of them with .to()")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"images are {x.dtype} but the model's weights are {weight.dtype}; cast with "
                        f"x.to({weight.dtype}) or model.to({x.dtype}), or run under torch.autocast")


def check_finite(x: torch.Tensor) -> None:
    """ValueError when `x` holds NaN or Inf (the `check_finite=True` option of the models)."""
    if not bool(torch.isfinite(x).all()):
        nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        raise ValueError(f"images contain {nan} NaN and {inf} Inf values (check_finite=True); clean the input, "
                         "e.g. torch.nan_to_num(x), or find the step that produced them")


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
        temporal_patch_size: int = 1,
    ) -> None:
        super().__init__()
        self.temporal_patch_size = temporal_patch_size
        self.img_size = to_2tuple(img_size, "img_size")
        self.patch_size = to_2tuple(patch_size, "patch_size")
        self.in_chans = in_chans
        self.strict_img_size = strict_img_size
        self.dynamic_img_pad = dynamic_img_pad
        self.crop_remainder = crop_remainder
        self.grid_size = self.grid_for(*self.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = self._projection(embed_dim, bias)

    def _projection(self, embed_dim: int, bias: bool) -> nn.Module:
        if self.temporal_patch_size > 1:
            kernel = (self.temporal_patch_size, *self.patch_size)
            return nn.Conv3d(self.in_chans, embed_dim, kernel_size=kernel, stride=kernel, bias=bias)
        return nn.Conv2d(self.in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)

    @property
    def patch_width(self) -> int:
        """Pixels in one flattened patch: channels x frames x patch height x patch width."""
        return self.in_chans * self.temporal_patch_size * self.patch_size[0] * self.patch_size[1]

    def _image_weight(self) -> torch.Tensor:
        """The kernel seen by a still image: a 3D kernel summed over its frames (T equal frames), (D, C, ph, pw)."""
        weight = self.proj.weight
        return weight.sum(2) if weight.dim() == 5 else weight

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

    def _checked(self, x: torch.Tensor) -> torch.Tensor:
        """`x` validated against the configuration, zero-padded when `dynamic_img_pad` asks for it."""
        check_images(x, self.in_chans, self.proj.weight)
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
        return x

    def forward(self, x: torch.Tensor, flatten: bool = True) -> torch.Tensor:
        x = self._checked(x)
        if self.temporal_patch_size > 1:
            x = F.conv2d(x, self._image_weight(), self.proj.bias, stride=self.patch_size)
        else:
            x = self.proj(x)
        x = x.permute(0, 2, 3, 1)  # (B, D, h, w) -> (B, h, w, D)
        return x.flatten(1, 2) if flatten else x

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Already cut patches (P, C*T*ph*pw), each flattened in (C, T, ph, pw) order (T = temporal_patch_size;
        without it, (C, ph, pw)) -> tokens (P, D)."""
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)


class NormLinearPatchEmbed(PatchEmbed):
    """vit-pytorch's patch projection: each p1 x p2 x C patch flattened (p1 p2 c order), LayerNorm, Linear,
    LayerNorm. Same sizes, padding and cropping rules as `PatchEmbed`; keys norm_in, proj, norm."""

    def __init__(self, *args: object, norm_eps: float = 1e-5, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        embed_dim = self.proj.out_features
        self.norm_in = nn.LayerNorm(self.proj.in_features, eps=norm_eps)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def _projection(self, embed_dim: int, bias: bool) -> nn.Module:
        return nn.Linear(self.in_chans * self.patch_size[0] * self.patch_size[1], embed_dim, bias=bias)

    def forward(self, x: torch.Tensor, flatten: bool = True) -> torch.Tensor:
        x = self._checked(x)
        B, C, H, W = x.shape
        (ph, pw), h, w = self.patch_size, H // self.patch_size[0], W // self.patch_size[1]
        x = x[:, :, : h * ph, : w * pw].reshape(B, C, h, ph, w, pw).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, ph, pw, C)
        x = self.norm(self.proj(self.norm_in(x.reshape(B, h, w, ph * pw * C))))  # (B, h, w, D)
        return x.flatten(1, 2) if flatten else x

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches (P, C*ph*pw) in (C, ph, pw) order -> tokens (P, D), through this layer's (ph, pw, C) order."""
        (ph, pw), C = self.patch_size, self.in_chans
        x = patches.reshape(-1, C, ph, pw).permute(0, 2, 3, 1).reshape(-1, ph * pw * C)  # (P, ph*pw*C)
        return self.norm(self.proj(self.norm_in(x)))
