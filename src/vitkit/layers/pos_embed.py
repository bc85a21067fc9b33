"""Position embeddings: resampling learned tables to a new grid, and fixed 2D sin-cos tables."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_abs_pos_embed(
    pos_embed: torch.Tensor,
    new_size: tuple[int, int],
    old_size: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = True,
    align_corners: bool = False,
) -> torch.Tensor:
    """Resample a (1, prefix + h*w, D) table to `new_size`, keeping prefix rows; interpolates in float32.

    `antialias=True` is timm's flavour; False is HF's `interpolate_pos_encoding` (bicubic, no antialias).
    `align_corners=True` maps the corner cells onto each other (Qwen3-VL's bilinear resize).
    """
    num_new = new_size[0] * new_size[1] + num_prefix_tokens
    if old_size is None:
        side = int((pos_embed.shape[1] - num_prefix_tokens) ** 0.5)
        old_size = (side, side)
    if num_new == pos_embed.shape[1] and tuple(old_size) == tuple(new_size):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[-1]
    grid = grid.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)  # (1, D, h, w)
    grid = F.interpolate(grid, size=tuple(new_size), mode=interpolation, antialias=antialias,
                         align_corners=align_corners)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)  # (1, h'*w', D)
    return torch.cat([prefix, grid], dim=1) if num_prefix_tokens else grid


def sincos_2d(
    height: int,
    width: int,
    dim: int,
    temperature: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Fixed (h*w, D) table [sin x, cos x, sin y, cos y], as big_vision and vit-pytorch's SimpleViT build it."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs the width divisible by 4, got {dim}")
    target = torch.get_default_device() if device is None else torch.device(device)
    work = torch.device("cpu") if target.type == "meta" else target  # meta has no values to compute
    y, x = torch.meshgrid(
        torch.arange(height, device=work, dtype=torch.float32),
        torch.arange(width, device=work, dtype=torch.float32),
        indexing="ij",
    )
    quarter = dim // 4
    omega = torch.arange(quarter, device=work, dtype=torch.float32) / max(quarter - 1, 1)
    omega = 1.0 / temperature**omega
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).to(target, dtype)
