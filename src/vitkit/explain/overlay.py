"""Attention maps as pictures: the patch heat upsampled onto the input image through a colormap, saved as PNG."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..data import DataConfig, read_image
from ..data.transforms import resize
from ..runtime import atomic_path
from .rollout import attention_maps


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` as RGB at `size` (height, width): enlarged with nearest (pixels stay sharp), shrunk with Lanczos."""
    height, width = size
    enlarge = height >= image.height and width >= image.width
    return image.convert("RGB").resize((width, height), Image.Resampling.NEAREST if enlarge else
                                       Image.Resampling.LANCZOS)


def side_by_side(left: Image.Image, right: Image.Image, gap: int = 4) -> Image.Image:
    """Two pictures of one height next to each other on white, `gap` pixels apart."""
    sheet = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)), "white")
    sheet.paste(left, (0, 0))
    sheet.paste(right, (left.width + gap, 0))
    return sheet


def overlay(image: Image.Image, heat: torch.Tensor, *, size: tuple[int, int] | None = None, alpha: float = 0.5,
            colormap: str = "jet") -> Image.Image:
    """`image` blended with `heat` (rows, cols) in [0, 1] coloured by `colormap`, as an RGB picture of `size`
    (height, width; default the image's own). The heat is upsampled bilinearly; an enlarged image keeps its
    pixels sharp (nearest), a shrunk one is filtered (Lanczos)."""
    import matplotlib

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(f"unknown colormap {colormap!r}; try jet, inferno, viridis or magma") from None
    height, width = size or (image.height, image.width)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {height}x{width}")
    base = fit(image, (height, width))
    # (rows, cols) -> (height, width): bilinear, so a coarse patch grid reads as a smooth field.
    field = F.interpolate(heat.float()[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    colour = cmap(field.clamp(0.0, 1.0).cpu().numpy())[..., :3]  # (height, width, 3) in [0, 1]
    blended = (1.0 - alpha) * np.asarray(base, dtype=np.float32) / 255.0 + alpha * colour
    return Image.fromarray(np.round(255.0 * blended).astype(np.uint8), mode="RGB")


def save_png(picture: Image.Image, path: str | os.PathLike) -> Path:
    """Write `picture` as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


@dataclass
class AttentionMapResult:
    """A written attention map: the PNG, the patch heat (rows, cols) and the model's top class."""

    path: Path
    heat: torch.Tensor
    top_class: int | None
    probability: float | None


def attention_map(
    model: nn.Module,
    image_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    method: str = "rollout",
    size: tuple[int, int] | None = None,
    alpha: float = 0.5,
    colormap: str = "jet",
    with_image: bool = False,
) -> AttentionMapResult:
    """Read an image, run `model` on it (resized and normalised as its config says) and write the attention map
    over the original picture as a PNG at `out`, of the image's size unless `size` (height, width) is given.
    `with_image` puts the plain image on the left of the map (the PNG is then twice as wide, plus a gap)."""
    image_path = Path(image_path)
    if not image_path.is_file():
        raise FileNotFoundError(f"image not found: {image_path}")
    data = DataConfig.of(model.config)
    pixels = read_image(image_path, data.in_chans)  # (C, H, W) in [0, 1]
    batch = data.normalize(resize(pixels, data.img_size))[None].to(next(model.parameters()).device)
    maps = attention_maps(model, batch, method=method)
    with Image.open(image_path) as image:
        picture = overlay(image, maps.heat[0], size=size, alpha=alpha, colormap=colormap)
        if with_image:
            picture = side_by_side(fit(image, (picture.height, picture.width)), picture)
    top_class = probability = None
    if maps.output.dim() == 2 and getattr(model, "num_classes", 0) > 0:
        probs = maps.output[0].float().softmax(dim=-1)
        top_class, probability = int(probs.argmax()), float(probs.max())
    return AttentionMapResult(save_png(picture, out), maps.heat[0].cpu(), top_class, probability)
