"""VisionTransformer on a `PackedBatch`: many images of different sizes in one pass, attention per image.

Each image gets its own prefix tokens and its own position table (resampled to its grid, as
`dynamic_img_size` does for one image); every block attends within images only (`Segments`), and
pooling ('token', 'avg', 'max', 'avgmax', 'map') reduces each image's tokens on their own. The results
equal running the model on each image alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..attention import Segments
from ..layers import BlockRotations, pool_segments
from ..packing import PackedBatch, TokenDrop
from . import tower

if TYPE_CHECKING:
    from .vision_transformer import VisionTransformer


def check(model: VisionTransformer, batch: PackedBatch, *, prefix: bool = True) -> None:
    """ValueError when `batch` was packed for another patch size, channel count or (with `prefix`) number of
    prefix tokens than the model's."""
    if not isinstance(batch, PackedBatch):
        raise TypeError(f"packed forwards take a vitkit.PackedBatch (from model.pack), got {type(batch).__name__}")
    patch = tuple(model.patch_embed.patch_size)
    if tuple(batch.patch_size) != patch:
        raise ValueError(
            f"the batch was packed with patch_size {batch.patch_size}, the model's is {patch}; "
            f"pack with pack_images(..., patch_size={patch})"
        )
    frames = model.config.temporal_patch_size
    width = model.patch_embed.in_chans * frames * patch[0] * patch[1]
    if batch.patches.shape[1] != width:
        raise ValueError(
            f"the batch's patches hold {batch.patches.shape[1] // (patch[0] * patch[1])} channels x frames, the "
            f"model takes {model.patch_embed.in_chans} channels x {frames} frame(s); pack with model.pack(...)"
        )
    tiles = tower.tiles(model.config)
    if tuple(batch.tiles) != tiles:
        raise ValueError(f"the batch's patches are ordered in tiles {batch.tiles}, the model needs {tiles} (windows, "
                         "merge groups); pack with model.pack(...)")
    for grid in set(batch.grid_sizes):
        tower.check_grid(model.config, *grid)
    if prefix and batch.num_prefix_tokens != model.num_prefix_tokens:
        raise ValueError(
            f"the batch was packed for {batch.num_prefix_tokens} prefix tokens, the model has "
            f"{model.num_prefix_tokens}; pack with model.pack(...) or batch.repack(num_prefix_tokens="
            f"{model.num_prefix_tokens})"
        )


def prepare(model: VisionTransformer, batch: PackedBatch, token_drop: TokenDrop | None) -> PackedBatch:
    """`batch` checked against the model, repacked for its prefix tokens, tokens dropped when training."""
    check(model, batch, prefix=False)
    if batch.num_prefix_tokens != model.num_prefix_tokens:
        batch = batch.repack(num_prefix_tokens=model.num_prefix_tokens)
    rate = model.token_drop if token_drop is None else token_drop
    if model.training and (callable(rate) or rate):
        batch = batch.drop_tokens(rate)
    return batch


def _add_patch_positions(model: VisionTransformer, batch: PackedBatch, x: torch.Tensor) -> None:
    """Add every patch's position embedding to its slot of `x` (S*T, D), in place: its image's table, resampled
    to its grid once per distinct grid, at its cell. One grid's rows at a time, so no table of all grids is held."""
    if model.pos_embed is None:
        return
    skip = 0 if model.no_embed_class else model.num_prefix_tokens  # prefix rows of the table
    grids = batch.grid_sizes
    for grid in sorted(set(grids)):
        images = torch.tensor([i for i, g in enumerate(grids) if g == grid], device=batch.device)
        patches = torch.isin(batch.patch_image, images).nonzero().squeeze(1)  # the patches of images of this grid
        cells = batch.patch_rows[patches] * grid[1] + batch.patch_cols[patches]
        table = model.pos_embed_for(*grid)[0, skip:]  # (h*w, D)
        x.index_add_(0, batch.patch_slots[patches], table[cells].to(x.dtype))


def embed_packed(model: VisionTransformer, batch: PackedBatch) -> torch.Tensor:
    """Packed patches -> tokens (S, T, D) with prefix tokens and position embeddings, padding slots zero."""
    weight = model.patch_embed.proj.weight
    tokens = model.patch_embed.embed_patches(batch.patches.to(weight.dtype))  # (P, D)
    S, T, D = batch.num_sequences, batch.seq_len, tokens.shape[-1]
    x = tokens.new_zeros(S * T, D).index_copy_(0, batch.patch_slots, tokens)
    _add_patch_positions(model, batch, x)
    n = model.num_prefix_tokens
    if n:
        prefix = torch.cat([t for t in (model.cls_token, model.reg_token) if t is not None], dim=1)  # (1, n, D)
        if model.pos_embed is not None and not model.no_embed_class:
            prefix = prefix + model.pos_embed[:, :n].to(prefix.dtype)
        start = batch.sequence * T + batch.offsets  # (I,)
        slots = (start[:, None] + torch.arange(n, device=start.device)).reshape(-1)
        x.index_copy_(0, slots, prefix[0].to(x.dtype).repeat(batch.num_images, 1))  # (I*n, D)
    return model.norm_pre(model.pos_drop(x.view(S, T, D)))


# Tokens that go through the blocks together. Every op but attention treats tokens independently, so a packed
# batch runs in groups of whole sequences: a CPU GEMM is as fast on 2k rows as on 8k, while buffers of 8k rows
# (50 MB for a ViT-S MLP) are fresh mmap'd memory at every call, page-faulted in, and evict the caches.
CHUNK_TOKENS = 2048


def rope_packed(model: VisionTransformer, batch: PackedBatch) -> BlockRotations | None:
    """The 2D RoPE rotations of every slot: each patch at its cell of its own image's grid (augmented once per image
    in training mode), prefix and padding slots unrotated."""
    if model.rope is None:
        return None
    grids = torch.tensor(batch.grid_sizes, device=batch.device)[batch.patch_image]  # (P, 2)
    patch_coords = model.rope.coordinates(batch.patch_rows, batch.patch_cols, grids[:, 0], grids[:, 1],
                                          groups=batch.patch_image)
    slots = batch.num_sequences * batch.seq_len
    coords = patch_coords.new_zeros(slots, 2).index_copy_(0, batch.patch_slots, patch_coords)
    valid = torch.zeros(slots, dtype=torch.bool, device=batch.device).index_fill_(0, batch.patch_slots, True)
    return BlockRotations(model.rope, coords, valid, (batch.num_sequences, batch.seq_len))


def forward_features(model: VisionTransformer, batch: PackedBatch, depth: int, norm: bool,
                     taps: dict[int, torch.Tensor | None] | None = None) -> torch.Tensor:
    """`VisionTransformer.forward_features` of a packed batch: tokens (S, T, D) after the first `depth` blocks,
    final norm applied with `norm`, in the batch's layout (padding slots meaningless). The outputs of the blocks
    named in `taps` are stored there, in the same layout."""
    check(model, batch)
    x = embed_packed(model, batch)  # (S, T, D)
    ids = batch.image_ids  # (S, T)
    windows = None if model.config.window_size is None else tower.packed_windows(model.config, batch)
    rope = rope_packed(model, batch)
    parts: dict[int, list[torch.Tensor]] = {i: [] for i in taps or ()}

    def run(start: int, stop: int) -> torch.Tensor:
        part = None if rope is None else rope.select(start, stop)
        window = None if windows is None else Segments(windows[start:stop])
        chunk_taps = dict.fromkeys(parts)
        out = model.forward_blocks(x[start:stop], Segments(ids[start:stop]), depth, part, window, chunk_taps)
        for i, tokens in chunk_taps.items():
            parts[i].append(tokens)
        return model.norm(out) if norm else out

    rows = max(1, CHUNK_TOKENS // batch.seq_len)
    if rows >= batch.num_sequences:
        out = run(0, batch.num_sequences)
    else:
        out = torch.empty_like(x)  # filled chunk by chunk: a chunk's result is freed once copied in
        for i in range(0, batch.num_sequences, rows):
            out[i : i + rows] = run(i, i + rows)
    if taps is not None:
        taps.update({i: torch.cat(chunks) if len(chunks) > 1 else chunks[0] for i, chunks in parts.items()})
    return out


def pool_packed(model: VisionTransformer, x: torch.Tensor, batch: PackedBatch,
                pool: str) -> torch.Tensor | list[torch.Tensor]:
    """`VisionTransformer.pool` of packed tokens (S, T, D): (I, D), each image pooled over its own tokens by
    `pool` (resolved by the model), or each image's tokens for 'none'."""
    if tuple(x.shape[:2]) != (batch.num_sequences, batch.seq_len):
        raise ValueError(f"packed tokens of shape {tuple(x.shape)} do not follow the batch's layout (S, T) = "
                         f"{(batch.num_sequences, batch.seq_len)}; pass the batch they were computed from")
    if pool == "none":
        return batch.unpack(x)
    flat = x.reshape(-1, x.shape[-1])  # (S*T, D)
    if pool == "map":
        kv_ids = torch.full((flat.shape[0],), -1, dtype=torch.long, device=x.device)
        kv_ids[batch.patch_slots] = batch.patch_image  # MAP pools patch tokens only, as the dense pool does
        return model.attn_pool.forward_segments(x, kv_ids.view(x.shape[:2]), batch.image_order(),
                                                model.attention_choice)
    if pool == "token":
        return flat[batch.sequence * batch.seq_len + batch.offsets]
    return pool_segments(flat[batch.patch_slots], batch.patch_image, batch.num_images, pool)


def forward_packed(
    model: VisionTransformer,
    batch: PackedBatch,
    *,
    pre_logits: bool = False,
    return_tokens: bool = False,
    token_drop: TokenDrop | None = None,
) -> torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
    """Per-image logits (I, classes), or pooled features with `pre_logits` / without a head, image order.

    `global_pool=''` or `ignore_head` returns each image's tokens instead (a list of (prefix + h*w, D); a merging
    model's merged tokens per image or clip); `return_tokens` returns (pooled, tokens). Token dropping applies in
    training mode only.
    """
    batch = prepare(model, batch, token_drop)
    x = model.forward_features(batch)
    pool = model.resolve_pool()
    if model.merger is not None:  # the tokens are the merged ones, pooled from there
        tokens = tower.merge_packed(model.merger, x, batch)
        pooled = None if model.ignore_head or pool == "none" else tower.reduce(tokens, pool)
    else:
        tokens = batch.unpack(x)
        pooled = None if model.ignore_head or pool == "none" else model.pool(x, batch=batch)
    if pooled is None:
        return tokens
    out = model.head_drop(model.fc_norm(pooled))
    if not pre_logits:
        out = model.head(out)
    return (out, tokens) if return_tokens else out
