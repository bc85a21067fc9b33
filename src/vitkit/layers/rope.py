"""2D rotary position embeddings (RoPE): q and k of every patch token rotated by angles of its (row, col) cell.

A variant is one entry of `ROPES`: how a cell becomes two coordinates, how coordinates become angles, and the
layout of the rotated pairs. The entries are the ones timm's `eva.py` builds (`layers/pos_embed_sincos.py`):

- 'dinov3': cell centres normalised to [-1, 1] per axis, angle 2π·c / period with periods theta^(4i/D) (theta 100),
  pairs (i, i + D/2) ("rotate half"). DINOv3, and timm's RotaryEmbeddingDinoV3.
- 'eva02': cell indices (+ `offset`, rescaled to a reference grid when one is given), angle c · theta^(-4i/D)
  (theta 10000), adjacent pairs. EVA-02, Perception Encoder; timm's RotaryEmbeddingCat.
- 'qwen': cell indices, angle c · theta^(-4i/D) (theta 10000), pairs (i, i + D/2): Qwen2-VL, Qwen2.5-VL and
  Qwen3-VL's vision towers ("axial" RoPE in transformers).
- 'mixed': cell indices, angles c_0·f_0 + c_1·f_1 with learned frequencies per block and head, adjacent pairs
  (RoPE-Mixed, Heo et al. 2024; timm's RotaryEmbeddingMixed, key `rope.freqs`).

Prefix tokens (class, registers) and padding slots get angle 0 (sin 0, cos 1), which leaves them exactly as they
are, so dense and packed sequences rotate in one elementwise pass. Training-time coordinate augmentations
(DINOv3's shift, jitter, rescale) run in training mode only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# cell index (N,), grid size along that axis (N,), offset, reference size or None -> coordinate (N,)
Coordinate = Callable[[torch.Tensor, torch.Tensor, float, float | None], torch.Tensor]
# (head_dim, theta) -> (D/4,) bands; (coordinates (N, 2, 1), bands) -> angles (N, 2, D/4)
Bands = Callable[[int, float], torch.Tensor]
Angle = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def centred(index: torch.Tensor, size: torch.Tensor, offset: float, ref: float | None) -> torch.Tensor:
    """DINOv3: the cell's centre as a share of the axis, mapped to [-1, 1]."""
    return (index + 0.5 + offset) / size * 2.0 - 1.0


def cell_index(index: torch.Tensor, size: torch.Tensor, offset: float, ref: float | None) -> torch.Tensor:
    """EVA-02 / RoPE-ViT: the cell's index (+ offset); with a reference grid, rescaled as if the image had its size."""
    coord = index + offset
    return coord if ref is None else coord / size * ref


def periods(head_dim: int, theta: float) -> torch.Tensor:
    """DINOv3: period theta^(4i/D) of band i."""
    return theta ** (2.0 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))


def inverse_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """EVA-02: angle theta^(-4i/D) per unit of coordinate in band i."""
    return 1.0 / theta ** (torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 4))


@dataclass(frozen=True)
class RopeVariant:
    """One way to turn cells into rotations (see the module docstring). Learned variants have no bands: their
    frequencies are a parameter per block and head."""

    coordinate: Coordinate
    theta: float  # default base of the frequencies
    half: bool  # pairs (i, i + D/2) when True, (2i, 2i + 1) when False
    bands: Bands | None = None
    angle: Angle | None = None


ROPES: dict[str, RopeVariant] = {
    "dinov3": RopeVariant(centred, 100.0, half=True, bands=periods, angle=lambda c, b: 2 * math.pi * c / b),
    "eva02": RopeVariant(cell_index, 10000.0, half=False, bands=inverse_frequencies, angle=lambda c, b: c * b),
    "qwen": RopeVariant(cell_index, 10000.0, half=True, bands=inverse_frequencies, angle=lambda c, b: c * b),
    "mixed": RopeVariant(cell_index, 10.0, half=False),
}
ROPE_NAMES = ("none", *ROPES)


@dataclass(frozen=True)
class Rotation:
    """sin and cos of each token slot's angles in the variant's pair layout, shaped to broadcast against q and k
    ((T, D) for one grid, (S, 1, T, D) for packed sequences, with a head axis for learned frequencies). `sin`
    carries the sign of the 90° turn: -sin at the first element of each pair, +sin at the second."""

    sin: torch.Tensor
    cos: torch.Tensor
    half: bool

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., T, D) rotated pair by pair: x·cos + partner·sin, the partner being the pair's other element
        (i <-> i + D/2 for halves: a roll; 2i <-> 2i + 1 otherwise: a flip of each pair)."""
        if self.half:
            partner = x.roll(x.shape[-1] // 2, dims=-1)
        else:
            partner = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
        return torch.addcmul(x * self.cos, partner, self.sin).to(x.dtype)


class RotaryEmbedding2D(nn.Module):
    """Angles for patch cells of a model's heads: `rotation(rows, cols, heights, widths, block)` -> `Rotation`.

    `theta` is the frequency base (None: the variant's), `ref_grid` EVA-02's reference grid (positions rescaled
    to it), `offset` added to cell positions, `indexing` 'ij' (row first) or 'xy' (column first). `shift`, `jitter`
    and `rescale` are DINOv3's training-time coordinate augmentations (uniform shift in [-s, s]; log-uniform
    per-axis and shared scales in [1/J, J] and [1/R, R]); None turns each off.
    """

    def __init__(self, variant: str, head_dim: int, num_heads: int, depth: int, *, theta: float | None = None,
                 ref_grid: tuple[int, int] | None = None, offset: float = 0.0, indexing: str = "ij",
                 shift: float | None = None, jitter: float | None = None, rescale: float | None = None) -> None:
        super().__init__()
        if variant not in ROPES:
            raise ValueError(f"unknown rope {variant!r}; choose one of {', '.join(ROPE_NAMES)}")
        if head_dim % 4:
            raise ValueError(f"2D RoPE splits each head in four (two axes, sin and cos pairs): head_dim must be "
                             f"divisible by 4, got {head_dim}")
        self.variant = ROPES[variant]
        self.name = variant
        self.head_dim, self.num_heads, self.depth = head_dim, num_heads, depth
        self.theta = self.variant.theta if theta is None else float(theta)
        self.ref_grid = ref_grid
        self.offset = offset
        self.swap = indexing == "xy"
        self.augment = (shift, jitter, rescale)
        if self.variant.bands is None:  # learned: (axis, block, head, D/2), timm's `rope.freqs`
            self.freqs = nn.Parameter(mixed_frequencies(head_dim, depth, num_heads, self.theta))
        else:
            self.register_buffer("bands", self.variant.bands(head_dim, self.theta), persistent=False)

    def _apply(self, fn: Callable, *args: object, **kwargs: object) -> nn.Module:
        module = super()._apply(fn, *args, **kwargs)
        bands = getattr(self, "bands", None)
        if bands is not None and torch.finfo(bands.dtype).bits < 32:  # .half() and the like: bands stay float32
            self.bands = self.variant.bands(self.head_dim, self.theta).to(bands.device)
        return module

    def coordinates(self, rows: torch.Tensor, cols: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor,
                    groups: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 2) float32 coordinates of cells (row, col) of grids (height, width), channels in `indexing` order;
        in training mode augmented once per group (`groups`: each cell's image; None: one group)."""
        ref = self.ref_grid or (None, None)
        axes = [self.variant.coordinate(i.float(), s.float(), self.offset, r)
                for i, s, r in zip((rows, cols), (heights, widths), ref, strict=True)]
        coords = torch.stack(axes[::-1] if self.swap else axes, dim=-1)
        if self.training and any(a is not None for a in self.augment):
            coords = self._augment(coords, groups)
        return coords

    def _augment(self, coords: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        """DINOv3's shift, per-axis jitter and shared rescale, in its draw order, one draw per group."""
        shift, jitter, rescale = self.augment
        if groups is None:
            groups = torch.zeros(coords.shape[0], dtype=torch.long, device=coords.device)
        count = int(groups.max()) + 1 if groups.numel() else 0
        draw = coords.new_empty
        if shift is not None:
            coords = coords + draw(count, 2).uniform_(-shift, shift)[groups]
        if jitter is not None:
            coords = coords * draw(count, 2).uniform_(-math.log(jitter), math.log(jitter)).exp()[groups]
        if rescale is not None:
            coords = coords * draw(count, 1).uniform_(-math.log(rescale), math.log(rescale)).exp()[groups]
        return coords

    def angles(self, coords: torch.Tensor, block: int = 0) -> torch.Tensor:
        """(N, 2) coordinates -> (N, D/2) angles, or (heads, N, D/2) for learned frequencies (block `block`'s)."""
        if self.variant.angle is None:
            freqs = self.freqs[:, block].float()  # (2, H, D/2)
            return coords[:, 0, None] * freqs[0, :, None] + coords[:, 1, None] * freqs[1, :, None]
        coords = coords[:, :, None].to(self.bands.dtype)  # float64 bands: angles in float64 too
        return self.variant.angle(coords, self.bands).flatten(1)  # (N, 2, D/4) -> (N, D/2)

    def rotation(self, angles: torch.Tensor, valid: torch.Tensor | None = None) -> Rotation:
        """The `Rotation` of (..., N, D/2) angles; slots where `valid` (N,) is False get angle 0 (no rotation)."""
        if valid is not None:
            angles = angles * valid[:, None].to(angles.dtype)
        half, sin = self.variant.half, angles.sin()
        return Rotation(_pairs(-sin, sin, half), _pairs(angles.cos(), None, half), half)

    def extra_repr(self) -> str:
        return f"{self.name}, theta={self.theta:g}, head_dim={self.head_dim}"


def _pairs(first: torch.Tensor, second: torch.Tensor | None, half: bool) -> torch.Tensor:
    """(..., D/2) values for the first and second element of each pair (second None: the same) -> (..., D) in
    the pair layout: [first, second] for halves, [first0, second0, first1, second1, ...] otherwise."""
    second = first if second is None else second
    return torch.cat([first, second], dim=-1) if half else torch.stack([first, second], dim=-1).flatten(-2)


def mixed_frequencies(head_dim: int, depth: int, num_heads: int, theta: float) -> torch.Tensor:
    """RoPE-Mixed's initial frequencies (2, depth, heads, D/2): magnitudes theta^(-4i/D) along a random direction
    per block and head (timm's `init_random_2d_freqs`)."""
    magnitude = 1.0 / theta ** (torch.arange(0, head_dim, 4, dtype=torch.float32) / head_dim)  # (D/4,)
    angle = torch.rand(depth, num_heads, 1) * 2 * math.pi
    fx = torch.cat([magnitude * torch.cos(angle), magnitude * torch.cos(angle + math.pi / 2)], dim=-1)
    fy = torch.cat([magnitude * torch.sin(angle), magnitude * torch.sin(angle + math.pi / 2)], dim=-1)
    return torch.stack([fx, fy])


class BlockRotations:
    """The rotations of one forward pass, block by block: `rotations[i]` is block i's `Rotation`. Fixed frequencies
    give one rotation that every block shares (made once); learned ones give one per block, made when asked.

    `coords` (N, 2) and `valid` (N,) are the token slots' coordinates and which of them are patches; `sequences`
    (S, T) says the N = S*T slots are packed sequences, so rotations come out as (S, 1 or H, T, D).
    """

    def __init__(self, rope: RotaryEmbedding2D, coords: torch.Tensor, valid: torch.Tensor,
                 sequences: tuple[int, int] | None = None) -> None:
        self.rope, self.coords, self.valid, self.sequences = rope, coords, valid, sequences
        self._shared: Rotation | None = None

    def __getitem__(self, block: int) -> Rotation:
        learned = self.rope.variant.angle is None
        if self._shared is not None and not learned:
            return self._shared
        rotation = self.rope.rotation(self.rope.angles(self.coords, block), self.valid)
        if self.sequences is not None:
            S, T = self.sequences
            # (N, D) -> (S, 1, T, D); learned (H, N, D) -> (S, H, T, D)
            shape = (-1, S, T, rotation.sin.shape[-1])
            rotation = Rotation(*(t.reshape(shape).transpose(0, 1) for t in (rotation.sin, rotation.cos)),
                                rotation.half)
        if not learned:
            self._shared = rotation
        return rotation

    def select(self, start: int, stop: int) -> BlockRotations:
        """The rotations of packed sequences start..stop-1 alone."""
        S, T = self.sequences
        stop = min(stop, S)
        part = slice(start * T, stop * T)
        return BlockRotations(self.rope, self.coords[part], self.valid[part], (stop - start, T))
