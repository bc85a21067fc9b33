"""What the vision towers of vision-language models add to the ViT (Qwen2.5-VL, Qwen3-VL): window attention, the
patch merger and deepstack outputs, and the order their tokens take.

Tokens keep the order the Hugging Face towers give them. Dense: each merge group's tokens consecutive, groups in
raster order (the processors' patch order). Packed: windows first (each window's tokens contiguous, so a window is
one segment of the variable-length kernels), merge groups inside them. Merged tokens come out in raster order of
the merged grid, a clip's grids one after another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..layers import pool_tokens
from ..packing import PackedBatch, tile_order

if TYPE_CHECKING:
    from torch import nn

    from .config import ViTConfig
    from .vision_transformer import VisionTransformer


@dataclass(frozen=True)
class VisionTokens:
    """What a vision-language model receives from its tower: `tokens`, one (n_i, merge_dim) tensor per image or clip
    (merged tokens, raster order of the merged grid); `deepstack`, per `config.deepstack` block, the same for that
    block's own merger (Qwen3-VL)."""

    tokens: list[torch.Tensor]
    deepstack: list[list[torch.Tensor]]


def tiles(config: ViTConfig) -> tuple[int, ...]:
    """The nested tiles (in patches, outermost first) a packed image's patches are ordered by: windows, then merge
    groups; () for a plain ViT."""
    window = (config.window_size,) if config.window_size else ()
    merge = (config.merge_size,) if config.merge_size > 1 else ()
    return window + merge


def check_grid(config: ViTConfig, height: int, width: int) -> None:
    """ValueError unless merge groups tile an (height, width) patch grid."""
    m = config.merge_size
    if height % m or width % m:
        (ph, pw), pixels = config.patch_size, f"{m * config.patch_size[0]} px"
        raise ValueError(f"an image of {height * ph}x{width * pw} px gives a {height}x{width} patch grid, which the "
                         f"merger's {m}x{m} groups do not tile; resize it to sides that are multiples of {pixels} "
                         "(vitkit.data.smart_resize does)")


def dense_order(config: ViTConfig, height: int, width: int, device: torch.device) -> torch.Tensor | None:
    """Raster cell of each dense token of an (height, width) grid: merge groups consecutive (None: raster order)."""
    if config.merge_size == 1:
        return None
    check_grid(config, height, width)
    return tile_order(height, width, (config.merge_size,), device)


def windowed(config: ViTConfig, block: int) -> bool:
    """Whether block `block` attends within windows rather than across the whole image."""
    return config.window_size is not None and block not in config.full_attention_blocks


def _window_of(config: ViTConfig, rows: torch.Tensor, cols: torch.Tensor, width: int | torch.Tensor) -> torch.Tensor:
    side = config.window_size
    return (rows // side) * -(-width // side) + cols // side


def dense_windows(config: ViTConfig, height: int, width: int, order: torch.Tensor | None,
                  device: torch.device) -> torch.Tensor:
    """(1, 1, N, N) bool attention mask of the dense tokens (in `order`): True within a window."""
    cells = torch.arange(height * width, device=device) if order is None else order
    window = _window_of(config, cells // width, cells % width, width)
    return (window[:, None] == window[None, :])[None, None]


def packed_windows(config: ViTConfig, batch: PackedBatch) -> torch.Tensor:
    """(S, T) segment ids of a packed batch's slots, one per window of each image (-1 padding); windows are
    contiguous because the batch was packed in the model's tiles."""
    widths = torch.tensor([w for _, w in batch.grid_sizes], device=batch.device)
    heights = torch.tensor([h for h, _ in batch.grid_sizes], device=batch.device)
    side = config.window_size
    per_image = -(-heights // side) * -(-widths // side)
    first = torch.cumsum(per_image, 0) - per_image  # each image's first window id
    window = first[batch.patch_image] + _window_of(config, batch.patch_rows, batch.patch_cols,
                                                   widths[batch.patch_image])
    ids = torch.full((batch.num_sequences * batch.seq_len,), -1, dtype=torch.long, device=batch.device)
    ids[batch.patch_slots] = window
    return ids.view(batch.num_sequences, batch.seq_len)


def merge_packed(merger: nn.Module, tokens: torch.Tensor, batch: PackedBatch) -> list[torch.Tensor]:
    """Packed tokens (S, T, D) -> per image or clip its merged tokens (n_i, out), in raster order of its merged grid."""
    group = merger.group
    merged = merger(tokens.reshape(-1, tokens.shape[-1])[batch.patch_slots])  # (P, D) -> (P / m², out)
    first = torch.arange(0, batch.patch_image.numel(), group, device=tokens.device)  # each group's first patch
    image = batch.patch_image[first]
    side = round(group**0.5)
    widths = torch.tensor([w for _, w in batch.grid_sizes], device=tokens.device)[image] // side
    cell = (batch.patch_rows[first] // side) * widths + batch.patch_cols[first] // side
    order = torch.argsort(image * (cell.max() + 1) + cell)  # image by image, raster within each
    counts = torch.bincount(image, minlength=batch.num_images).tolist()
    return batch.group_items(list(merged[order].split(counts)))


def reduce(tokens: torch.Tensor | list[torch.Tensor], pool: str) -> torch.Tensor | list[torch.Tensor]:
    """Merged tokens pooled by `pool` ('none' keeps them): (B, n, D) -> (B, D), or a list of (n_i, D) -> (I, D)."""
    if pool == "none":
        return tokens
    if pool not in ("avg", "max", "avgmax"):
        raise ValueError(f"merged tokens pool by 'avg', 'max', 'avgmax' or 'none', not {pool!r}")
    if isinstance(tokens, list):
        return torch.cat([pool_tokens(t[None], pool, 0) for t in tokens])
    return pool_tokens(tokens, pool, 0)


def encode(model: VisionTransformer, x: torch.Tensor | PackedBatch) -> VisionTokens:
    """Images (B, C, H, W) or a packed batch -> the merged tokens and deepstack features (see `VisionTokens`)."""
    if model.merger is None:
        raise ValueError("encode gives merged tokens, and this model has no patch merger (merge_size=1); use "
                         "forward_features / pool")
    taps: dict[int, torch.Tensor] = dict.fromkeys(model.config.deepstack)
    tokens = model.forward_features(x, taps=taps)
    deepstack = [_merged(merger, taps[i], x) for i, merger in zip(model.config.deepstack, model.deepstack, strict=True)]
    return VisionTokens(_merged(model.merger, tokens, x), deepstack)


def _merged(merger: nn.Module, tokens: torch.Tensor, x: torch.Tensor | PackedBatch) -> list[torch.Tensor]:
    """Each image's (or clip's) merged tokens: packed ones through `merge_packed`, a dense batch's row by row."""
    return merge_packed(merger, tokens, x) if isinstance(x, PackedBatch) else list(merger(tokens).unbind(0))
