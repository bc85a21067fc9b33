"""`PackedBatch` and `pack_images`: images of any size cut into patches and packed into token sequences.

NaViT-style: every image becomes `num_prefix_tokens` slots (class / register tokens) followed by its
patch tokens in raster order (or in nested tiles: windows, then merge groups, as Qwen-VL towers need); images
are packed greedily (first-fit decreasing) into sequences of at most `max_tokens` slots. A model runs the patches
of all images at once and attention stays inside each image (`vitkit.attention.Segments`). A clip of frames
becomes one token grid per `temporal_patch_size` frames, each packed as an image of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention import Segments
from ..layers import to_2tuple

TokenDrop = float | Callable[[int, int], float]  # a rate, or (height, width) in pixels -> rate


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins of item indices (ascending in each bin) whose lengths sum to at most `capacity`.

    Largest first, each into the first bin it fits: never more than 11/9 OPT + 1 bins.
    """
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        if lengths[i] > capacity:
            raise ValueError(f"an item of {lengths[i]} tokens does not fit max_tokens={capacity}")
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return [sorted(b) for b in bins]


@dataclass(frozen=True)
class PackedBatch:
    """Images of different sizes as packed token sequences; `.to(device)` moves it.

    Per patch (P = all images' patches, image after image, raster order within an image):
    `patches` (P, C*ph*pw) pixels in (C, ph, pw) order, `patch_image` its image, `patch_rows` /
    `patch_cols` its cell in that image's grid, `patch_slots` its flat slot (sequence * seq_len + position).
    Per image (I): `grid_sizes` (h, w) patch grid, `image_sizes` (H, W) pixels before padding,
    `sequence` / `offsets` where its first slot is, `lengths` its slots (prefix + patches).
    Per slot: `image_ids` (S, seq_len), the image each slot belongs to, -1 for padding.
    `tiles`: the nested tile sides (in patches) the patches of an image are ordered by, outermost first; () is
    raster order. `item_grids`: per packed input, how many of the images (token grids) it became: 1 for an image,
    frames / temporal_patch_size for a clip (patches then hold (C, T, ph, pw) pixels).
    """

    patches: torch.Tensor
    patch_image: torch.Tensor
    patch_rows: torch.Tensor
    patch_cols: torch.Tensor
    patch_slots: torch.Tensor
    sequence: torch.Tensor
    offsets: torch.Tensor
    lengths: torch.Tensor
    image_ids: torch.Tensor
    grid_sizes: tuple[tuple[int, int], ...]
    image_sizes: tuple[tuple[int, int], ...]
    bins: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, int]
    num_prefix_tokens: int
    max_tokens: int
    tiles: tuple[int, ...] = ()
    item_grids: tuple[int, ...] = ()

    # -- shape facts ----------------------------------------------------------------------------

    @property
    def num_images(self) -> int:
        return len(self.grid_sizes)

    @property
    def num_sequences(self) -> int:
        return self.image_ids.shape[0]

    @property
    def seq_len(self) -> int:
        return self.image_ids.shape[1]

    @property
    def device(self) -> torch.device:
        return self.patches.device

    @property
    def valid(self) -> torch.Tensor:
        """(S, seq_len) bool: slots that hold a token (not padding)."""
        return self.image_ids >= 0

    def _per_slot(self, values: torch.Tensor) -> torch.Tensor:
        out = torch.full((self.num_sequences * self.seq_len,), -1, dtype=torch.long, device=self.device)
        out[self.patch_slots] = values
        return out.view(self.num_sequences, self.seq_len)

    @property
    def rows(self) -> torch.Tensor:
        """(S, seq_len) each slot's row in its image's patch grid; -1 for prefix tokens and padding."""
        return self._per_slot(self.patch_rows)

    @property
    def cols(self) -> torch.Tensor:
        """(S, seq_len) each slot's column in its image's patch grid; -1 for prefix tokens and padding."""
        return self._per_slot(self.patch_cols)

    @property
    def num_tokens(self) -> int:
        """Real tokens (prefix + patches of every image), padding excluded."""
        return int(self.lengths.sum())

    @property
    def cu_seqlens(self) -> tuple[torch.Tensor, ...]:
        """Per sequence: int32 cumulative slot counts of its images, from 0 (flash-attn's `cu_seqlens`)."""
        out = []
        for members in self.bins:
            lengths = self.lengths[list(members)].to(torch.int32)
            out.append(F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0)))
        return tuple(out)

    def segments(self) -> Segments:
        """The attention layout: each slot attends only to slots of its own image."""
        return Segments(self.image_ids)

    def image_order(self) -> torch.Tensor:
        """(I,) image ids in the order their slots appear (sequence by sequence)."""
        return torch.tensor([i for members in self.bins for i in members], device=self.device)

    def image_slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(I, L) flat slot of each image's tokens (prefix first) and (I, L) bool of which are real."""
        width = int(self.lengths.max())
        pos = torch.arange(width, device=self.device)
        start = self.sequence * self.seq_len + self.offsets
        real = pos[None, :] < self.lengths[:, None]
        return torch.where(real, start[:, None] + pos[None, :], 0), real

    @property
    def num_items(self) -> int:
        """Inputs packed: images and clips (a clip is several token grids)."""
        return len(self.item_grids) if self.item_grids else self.num_images

    def group_items(self, per_image: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-image tensors -> one per packed input: a clip's token grids concatenated in time order."""
        if not self.item_grids or len(self.item_grids) == len(per_image):
            return per_image
        out, at = [], 0
        for n in self.item_grids:
            out.append(torch.cat(per_image[at : at + n]) if n > 1 else per_image[at])
            at += n
        return out

    def unpack(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Packed tokens (S, seq_len, D) -> one (prefix + kept patches, D) tensor per image, in image order."""
        flat = tokens.reshape(self.num_sequences * self.seq_len, -1)
        start = (self.sequence * self.seq_len + self.offsets).tolist()
        return [flat[s : s + n] for s, n in zip(start, self.lengths.tolist(), strict=True)]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
           non_blocking: bool = False) -> PackedBatch:
        """This batch on `device`; `dtype` casts the pixels only (index tensors stay integer)."""
        changes = {
            f.name: getattr(self, f.name).to(device, dtype if f.name == "patches" else None, non_blocking=non_blocking)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **changes)

    def pin_memory(self) -> PackedBatch:
        return dataclasses.replace(self, patches=self.patches.pin_memory())

    # -- re-packing -----------------------------------------------------------------------------

    def repack(self, *, num_prefix_tokens: int | None = None, max_tokens: int | None = None) -> PackedBatch:
        """The same patches packed again, e.g. for a model with another number of prefix tokens."""
        counts = torch.bincount(self.patch_image, minlength=self.num_images).tolist()
        batch = _assemble(self.patches, self.patch_image, self.patch_rows, self.patch_cols, counts,
                          self.grid_sizes, self.image_sizes, self.patch_size,
                          self.num_prefix_tokens if num_prefix_tokens is None else num_prefix_tokens,
                          self.max_tokens if max_tokens is None else max_tokens)
        return dataclasses.replace(batch, tiles=self.tiles, item_grids=self.item_grids)

    def drop_tokens(self, rate: TokenDrop, generator: torch.Generator | None = None) -> PackedBatch:
        """NaViT token dropping: keep a random `1 - rate` of each image's patches (at least one), repacked.
        Not for tiled batches (their tiles must stay whole).

        `rate` is a float in [0, 1) or a function of the image's (height, width) in pixels returning one.
        Kept patches keep their grid cell, so position embeddings stay right. `generator` must be on the
        batch's device.
        """
        if self.tiles:
            raise ValueError(f"patches ordered in tiles {self.tiles} (windows / merge groups) cannot be dropped one "
                             "by one; train without token_drop")
        counts = torch.bincount(self.patch_image, minlength=self.num_images)
        keep = []
        for i, (n, size) in enumerate(zip(counts.tolist(), self.image_sizes, strict=True)):
            r = rate(*size) if callable(rate) else rate
            if not isinstance(r, int | float) or not 0.0 <= r < 1.0:
                raise ValueError(f"token_drop rate must be in [0, 1), got {r!r} for image {i} of size {size}")
            keep.append(max(1, round(n * (1.0 - r))) if n else 0)
        keep_t = torch.tensor(keep, device=self.device)
        # Rank patches within their image by a random score; keep the `keep` lowest-ranked of each image.
        score = torch.rand(self.patch_image.numel(), generator=generator, device=self.device)
        order = torch.argsort(self.patch_image.double() * 2.0 + score.double())
        start = F.pad(counts.cumsum(0), (1, 0))[:-1]
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel(), device=self.device) - start[self.patch_image[order]]
        kept = torch.nonzero(rank < keep_t[self.patch_image]).squeeze(1)  # ascending: raster order kept
        batch = _assemble(self.patches[kept], self.patch_image[kept], self.patch_rows[kept], self.patch_cols[kept],
                          keep, self.grid_sizes, self.image_sizes, self.patch_size, self.num_prefix_tokens,
                          self.max_tokens)
        return dataclasses.replace(batch, item_grids=self.item_grids)


def _assemble(
    patches: torch.Tensor,
    patch_image: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    counts: list[int],
    grid_sizes: tuple[tuple[int, int], ...],
    image_sizes: tuple[tuple[int, int], ...],
    patch_size: tuple[int, int],
    num_prefix_tokens: int,
    max_tokens: int,
) -> PackedBatch:
    """Pack images of `counts` patches (+ prefix) into sequences and lay out every slot."""
    device = patches.device
    lengths_list = [n + num_prefix_tokens for n in counts]
    for i, n in enumerate(lengths_list):
        if n > max_tokens:
            h, w = image_sizes[i]
            raise ValueError(
                f"image {i} ({h}x{w} px, {grid_sizes[i][0]}x{grid_sizes[i][1]} patches + {num_prefix_tokens} "
                f"prefix token(s) = {n} tokens) does not fit max_tokens={max_tokens}; raise max_tokens to at "
                f"least {n} or resize the image"
            )
    bins = first_fit_decreasing(lengths_list, max_tokens)
    sequence = [0] * len(counts)
    offsets = [0] * len(counts)
    used = []
    for s, members in enumerate(bins):
        at = 0
        for i in members:
            sequence[i], offsets[i] = s, at
            at += lengths_list[i]
        used.append(at)
    seq_len = max(used)
    sequence_t = torch.tensor(sequence, dtype=torch.long, device=device)
    offsets_t = torch.tensor(offsets, dtype=torch.long, device=device)
    lengths = torch.tensor(lengths_list, dtype=torch.long, device=device)
    # Every slot of every image: its image and flat position.
    image_of_slot = torch.repeat_interleave(torch.arange(len(counts), device=device), lengths)
    first = F.pad(lengths.cumsum(0), (1, 0))[:-1]
    local = torch.arange(image_of_slot.numel(), device=device) - first[image_of_slot]
    flat = sequence_t[image_of_slot] * seq_len + offsets_t[image_of_slot] + local
    image_ids = torch.full((len(bins) * seq_len,), -1, dtype=torch.long, device=device)
    image_ids[flat] = image_of_slot
    # Patch p of image i sits after the image's prefix slots, in the order the patches are stored.
    counts_t = torch.tensor(counts, dtype=torch.long, device=device)
    patch_first = F.pad(counts_t.cumsum(0), (1, 0))[:-1]
    patch_local = torch.arange(patch_image.numel(), device=device) - patch_first[patch_image]
    slots = sequence_t[patch_image] * seq_len + offsets_t[patch_image] + num_prefix_tokens + patch_local
    return PackedBatch(
        patches=patches, patch_image=patch_image, patch_rows=rows, patch_cols=cols, patch_slots=slots,
        sequence=sequence_t, offsets=offsets_t, lengths=lengths, image_ids=image_ids.view(len(bins), seq_len),
        grid_sizes=tuple(grid_sizes), image_sizes=tuple(image_sizes), bins=tuple(tuple(b) for b in bins),
        patch_size=patch_size, num_prefix_tokens=num_prefix_tokens, max_tokens=max_tokens,
    )


def tile_order(height: int, width: int, tiles: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """(h*w,) raster indices of a grid's cells in nested-tile order: tiles of side tiles[0] row by row (clipped at
    the grid's edge), inside each the tiles of side tiles[1], and so on; cells of the innermost tile in raster order.
    () is raster order. Qwen2.5-VL: (window, merge) = (8, 2) patches."""
    order = torch.arange(height * width, device=device)
    rows, cols = order // width, order % width
    for side in reversed(tiles):  # stable sorts, innermost first: outer tiles decide, inner ones break ties
        key = (rows[order] // side) * -(-width // side) + cols[order] // side
        order = order[torch.sort(key, stable=True).indices]
    return order


def image_patches(image: torch.Tensor, patch_size: tuple[int, int], pad_to_patch: bool,
                  index: int = 0) -> tuple[torch.Tensor, tuple[int, int]]:
    """(C, H, W) -> (h*w, C*ph*pw) patches in raster order, each flattened (C, ph, pw), and the grid (h, w).
    Frames (C, T, H, W) -> (h*w, C*T*ph*pw) patches, each flattened (C, T, ph, pw)."""
    *lead, H, W = image.shape
    ph, pw = patch_size
    if H % ph or W % pw:
        if not pad_to_patch:
            raise ValueError(
                f"image {index} is {H}x{W}, not divisible by patch_size {ph}x{pw}; resize it, or pack with "
                "pad_to_patch=True (zero-pads right and bottom, as dynamic_img_pad)"
            )
        image = F.pad(image, (0, (-W) % pw, 0, (-H) % ph))
    h, w = image.shape[-2] // ph, image.shape[-1] // pw
    depth = len(lead)
    patches = image.reshape(*lead, h, ph, w, pw)
    patches = patches.permute(depth, depth + 2, *range(depth), depth + 1, depth + 3)  # (h, w, C[, T], ph, pw)
    return patches.reshape(h * w, -1), (h, w)


def _grids_of(item: torch.Tensor, temporal: int) -> list[torch.Tensor]:
    """An image (C, H, W) or clip (T, C, H, W) -> its token grids' pixels, each (C, H, W) or, with `temporal` > 1,
    (C, temporal, H, W): an image repeated `temporal` times, a clip in groups of `temporal` frames, its last frame
    repeated to fill the last group (as Qwen-VL's processors do)."""
    frames = item[None] if item.dim() == 3 else item
    if temporal == 1:
        return list(frames.unbind(0))
    if item.dim() == 3:
        frames = frames.expand(temporal, *frames.shape[1:])
    short = -frames.shape[0] % temporal
    if short:
        frames = torch.cat([frames, frames[-1:].expand(short, *frames.shape[1:])])
    groups = frames.unflatten(0, (-1, temporal)).transpose(1, 2)  # (G, T, C, H, W) -> (G, C, T, H, W)
    return list(groups.unbind(0))


def pack_images(
    images: Sequence[torch.Tensor] | torch.Tensor,
    *,
    patch_size: int | tuple[int, int],
    max_tokens: int,
    pad_to_patch: bool = True,
    num_prefix_tokens: int = 0,
    tiles: Sequence[int] = (),
    temporal_patch_size: int = 1,
) -> PackedBatch:
    """Pack (C, H_i, W_i) images into sequences of at most `max_tokens` tokens (greedy, first-fit decreasing).

    An image takes `num_prefix_tokens` slots (pass the model's: class + register tokens) plus one per
    patch. A size not divisible by the patch is zero-padded right and bottom with `pad_to_patch`, and an
    error otherwise. No image is ever dropped; one that cannot fit `max_tokens` alone is an error.
    `tiles` orders each image's patches in nested tiles (`tile_order`; tiles at the grid's edge are clipped).
    A clip (T, C, H, W) is packed as one token grid per `temporal_patch_size` frames (`PackedBatch.item_grids`).
    """
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"images as one tensor must be (N, C, H, W), got shape {tuple(images.shape)}")
        images = list(images.unbind(0))
    if not isinstance(images, Sequence) or len(images) == 0:
        raise ValueError("images must be a non-empty list of (C, H, W) tensors")
    patch = to_2tuple(patch_size, "patch_size")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
        raise ValueError(f"num_prefix_tokens must be an integer >= 0, got {num_prefix_tokens!r}")
    tiles = tuple(tiles)
    if any(isinstance(t, bool) or not isinstance(t, int) or t <= 0 for t in tiles):
        raise ValueError(f"tiles must be positive tile sides in patches, outermost first, got {tiles!r}")
    first = images[0]
    pieces, grids, sizes, item_grids = [], [], [], []
    for i, image in enumerate(images):
        if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or not image.is_floating_point():
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"images[{i}] must be a float (C, H, W) image or (T, C, H, W) clip tensor, got {got}")
        channels = image.shape[-3]
        if channels != first.shape[-3] or image.dtype != first.dtype or image.device != first.device:
            raise ValueError(
                f"images[{i}] is {channels}-channel {image.dtype} on {image.device}, images[0] "
                f"{first.shape[-3]}-channel {first.dtype} on {first.device}; all must match"
            )
        item = _grids_of(image, temporal_patch_size)
        item_grids.append(len(item))
        for frames in item:
            flat, grid = image_patches(frames, patch, pad_to_patch, i)
            if tiles:
                flat = flat[tile_order(*grid, tiles, device=flat.device)]
            pieces.append(flat)
            grids.append(grid)
            sizes.append((image.shape[-2], image.shape[-1]))
    device = first.device
    counts = [h * w for h, w in grids]
    patch_image = torch.repeat_interleave(torch.arange(len(grids), device=device),
                                          torch.tensor(counts, device=device))
    cells = torch.cat([tile_order(h, w, tiles, device=device) for h, w in grids])
    widths = torch.tensor([w for _, w in grids], device=device)[patch_image]
    batch = _assemble(torch.cat(pieces), patch_image, cells // widths, cells % widths, counts, tuple(grids),
                      tuple(sizes), patch, num_prefix_tokens, max_tokens)
    return dataclasses.replace(batch, tiles=tiles, item_grids=tuple(item_grids))
