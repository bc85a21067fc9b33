"""VisionTransformer: one model for ViT, DeiT-3, SigLIP, CLIP, DINOv2 and DeepSeek-VL2 vision towers.

State-dict layout is timm's, so timm checkpoints load as they are. The design follows seed 000
(pluggable attention, pre/post-norm blocks, recomputation of the first N blocks) with its bugs fixed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..attention import AttentionChoice, Segments, checkpoint_contexts
from ..layers import (
    FEATURE_POOLS,
    AttentionPoolLatent,
    BlockRotations,
    LayerScale,
    NormLinearPatchEmbed,
    PatchEmbed,
    PatchMerger,
    RotaryEmbedding2D,
    TransformerBlock,
    check_finite,
    create_norm,
    pool_tokens,
    resample_abs_pos_embed,
    sincos_2d,
)
from ..packing import PackedBatch, TokenDrop
from . import packed_forward, tower
from .config import ViTConfig
from .tower import VisionTokens

# Seed 000's positional order, so `VisionTransformer(224, 16, 3, 1000, ...)` means what it meant there.
SEED_POSITIONAL = (
    "img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads", "mlp_ratio",
    "qkv_bias", "drop_rate", "attn_drop_rate", "drop_path_rate", "weight_init", "embed_layer", "norm_layer",
    "act_layer", "attention_type", "deterministic", "pre_norm", "num_recomputing_layers", "global_pool",
)


def _resolve_config(args: tuple, kwargs: dict) -> tuple[ViTConfig, Callable[..., nn.Module], AttentionChoice]:
    """(config, embed_layer, kernel choice) from a ViTConfig / config dict / seed-style positional arguments +
    keywords. Seed 000's `attention_type` and `deterministic` are the kernel choice, not config fields."""
    base = ViTConfig()
    if args and isinstance(args[0], ViTConfig | dict):
        base = args[0] if isinstance(args[0], ViTConfig) else ViTConfig.from_dict(args[0])
        args = args[1:]
    if len(args) > len(SEED_POSITIONAL):
        raise TypeError(f"VisionTransformer takes at most {len(SEED_POSITIONAL)} positional arguments")
    for name, value in zip(SEED_POSITIONAL, args, strict=False):
        if name in kwargs:
            raise TypeError(f"VisionTransformer got {name!r} both positionally and by keyword")
        kwargs[name] = value
    choice = AttentionChoice(kwargs.pop("attention_type", None) or "auto", kwargs.pop("deterministic", False))
    embed_layer = kwargs.pop("embed_layer", None)
    cfg = base.replace(**kwargs) if kwargs else base
    if embed_layer is None:
        embed_layer = (
            functools.partial(NormLinearPatchEmbed, norm_eps=cfg.norm_eps)
            if cfg.patch_embed == "norm_linear_norm"
            else PatchEmbed
        )
    return cfg, embed_layer, choice


class VisionTransformer(nn.Module):
    """A Vision Transformer built from a `ViTConfig` or its fields.

    `VisionTransformer(embed_dim=384, depth=12, num_heads=6, attention_type="sdpa")`,
    `VisionTransformer(ViTConfig(...))` and seed 000's positional form are the same model;
    `model.config` rebuilds it. The attention kernel is not part of the config: `attention_type` /
    `deterministic` (seed 000's arguments) set the model's `attention_choice`, as `set_attention` does.
    The defaults are seed 000's (LayerNorm eps 1e-5, exact GELU), so the seed's arguments give the seed's
    model; `create_model(name)` gives the settings of the library a name comes from.
    `norm_layer` / `act_layer` take names or the seed's objects (`nn.LayerNorm`, `partial(nn.LayerNorm, eps=1e-6)`,
    `nn.GELU`), stored in the config as names. `embed_layer` (not part of the config) must take PatchEmbed's
    arguments and, like it, return a (B, h, w, D) grid from `forward(x, flatten=False)`.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__()
        cfg, embed_layer, choice = _resolve_config(args, dict(kwargs))
        self.config = cfg
        self.attention_choice = choice  # the one home of the kernel choice; layers receive it per call
        self.num_classes = cfg.num_classes
        self.global_pool = cfg.global_pool
        self.embed_dim = self.num_features = cfg.embed_dim
        self.num_prefix_tokens = cfg.num_prefix_tokens
        self.no_embed_class = cfg.no_embed_class or cfg.pos_embed == "sincos"
        self.dynamic_img_size = cfg.dynamic_img_size
        self.token_drop: TokenDrop = cfg.token_drop  # packed training only; may be set to a callable (h, w) -> rate
        self.ignore_head = cfg.ignore_head
        self.num_recomputing_layers = min(cfg.num_recomputing_layers, cfg.num_blocks)

        embed_args = dict(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            in_chans=cfg.in_chans,
            embed_dim=cfg.embed_dim,
            bias=not cfg.norm_pre if cfg.patch_bias is None else cfg.patch_bias,
            strict_img_size=not cfg.dynamic_img_size,
            dynamic_img_pad=cfg.dynamic_img_pad,
            crop_remainder=cfg.crop_remainder,
        )
        if cfg.temporal_patch_size > 1:
            embed_args["temporal_patch_size"] = cfg.temporal_patch_size
        try:
            self.patch_embed = embed_layer(**embed_args)
        except TypeError as err:
            raise TypeError(
                f"embed_layer {embed_layer!r} must accept vitkit.layers.PatchEmbed's arguments "
                f"({', '.join(embed_args)}): {err}"
            ) from err
        grid = self.patch_embed.grid_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, cfg.embed_dim)) if cfg.reg_tokens else None
        self.pos_embed: nn.Parameter | torch.Tensor | None
        if cfg.pos_embed == "learn":
            embed_len = grid[0] * grid[1] + (0 if self.no_embed_class else self.num_prefix_tokens)
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, cfg.embed_dim))
        elif cfg.pos_embed == "sincos":
            # Fixed, so not saved: rebuilt from the grid (and for other grids on the fly).
            self.register_buffer("pos_embed", sincos_2d(*grid, cfg.embed_dim)[None], persistent=False)
        else:
            self.pos_embed = None
        self.pos_drop = nn.Dropout(cfg.drop_rate if cfg.pos_drop_rate is None else cfg.pos_drop_rate)
        self.norm_pre = create_norm(cfg.norm_layer, cfg.embed_dim, cfg.norm_eps) if cfg.norm_pre else nn.Identity()

        # Stochastic depth grows linearly with depth (rates of the full depth, even if select_layer cuts it).
        drop_path = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.Sequential(*[
            TransformerBlock(
                cfg.embed_dim, cfg.num_heads, qkv_bias=cfg.qkv_bias, attn_drop=cfg.attn_drop_rate,
                drop=cfg.drop_rate if cfg.proj_drop_rate is None else cfg.proj_drop_rate, drop_path=drop_path[i],
                act_layer=cfg.act_layer, norm_layer=cfg.norm_layer, pre_norm=cfg.pre_norm, qk_norm=cfg.qk_norm,
                proj_bias=cfg.proj_bias, init_values=cfg.init_values, norm_eps=cfg.norm_eps, mlp_layer=cfg.mlp_layer,
                head_dim=cfg.head_dim, mlp_hidden_dim=cfg.mlp_width, mlp_norm=cfg.mlp_norm, key_bias=cfg.key_bias,
            )
            for i in range(cfg.num_blocks)
        ])
        self.rope = None if cfg.rope == "none" else RotaryEmbedding2D(
            cfg.rope, cfg.head_dim or cfg.embed_dim // cfg.num_heads, cfg.num_heads, cfg.depth, theta=cfg.rope_theta,
            ref_grid=cfg.rope_grid, offset=cfg.rope_offset, indexing=cfg.rope_indexing, shift=cfg.rope_shift,
            jitter=cfg.rope_jitter, rescale=cfg.rope_rescale,
        )
        final_norm = cfg.final_norm and not cfg.use_fc_norm
        self.norm = create_norm(cfg.norm_layer, cfg.embed_dim, cfg.norm_eps) if final_norm else nn.Identity()
        self.attn_pool = (
            AttentionPoolLatent(cfg.embed_dim, cfg.num_heads, mlp_hidden_dim=cfg.mlp_width, act_layer=cfg.act_layer,
                                norm_layer=cfg.norm_layer, norm_eps=cfg.norm_eps)
            if cfg.global_pool == "map"
            else None
        )
        merger = functools.partial(PatchMerger, cfg.embed_dim, cfg.merge_dim, cfg.merge_size, cfg.norm_layer,
                                   cfg.norm_eps)
        self.merger = merger() if cfg.merge_dim is not None else None
        self.deepstack = nn.ModuleList([merger(norm_merged=True) for _ in cfg.deepstack])
        use_fc_norm = cfg.final_norm and cfg.use_fc_norm
        self.fc_norm = create_norm(cfg.norm_layer, cfg.embed_dim, cfg.norm_eps) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(cfg.head_drop_rate)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        if cfg.weight_init != "skip":
            self.init_weights(cfg.weight_init)

    # -- initialisation -------------------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self, mode: str = "") -> None:
        """timm's schemes: '' truncated normal(0.02) for linears; 'jax' Xavier/LeCun as big_vision."""
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for token in (self.cls_token, self.reg_token):
            if token is not None:
                nn.init.normal_(token, std=1e-6)
        if self.attn_pool is not None:
            nn.init.trunc_normal_(self.attn_pool.latent, std=self.embed_dim**-0.5)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                if mode == "jax":
                    _init_linear_jax(name, module)
                else:
                    nn.init.trunc_normal_(module.weight, std=0.02)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d) and mode == "jax":
                fan_in = module.in_channels * math.prod(module.kernel_size)
                nn.init.trunc_normal_(module.weight, std=math.sqrt(1.0 / fan_in) / 0.87962566103423978)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, LayerScale):
                nn.init.constant_(module.gamma, self.config.init_values)

    # -- forward pieces -------------------------------------------------------------------------

    def pos_embed_for(self, height: int, width: int) -> torch.Tensor | None:
        """The position table for an (height, width) patch grid, resampled when it is not the native one."""
        if self.pos_embed is None or (height, width) == tuple(self.patch_embed.grid_size):
            return self.pos_embed
        if self.config.pos_embed == "sincos":
            return sincos_2d(height, width, self.embed_dim, device=self.pos_embed.device)[None]
        return self.resample_pos_embed(self.pos_embed, self.patch_embed.grid_size, (height, width))

    def resample_pos_embed(self, table: torch.Tensor, old_grid: tuple[int, int] | None = None,
                           new_grid: tuple[int, int] | None = None) -> torch.Tensor:
        """A learned table (1, prefix + h*w, D) of `old_grid` (None: a square one) for `new_grid` (None: the
        model's), prefix rows kept, resampled as this model's source does it (`pos_embed_interpolation` and
        `pos_embed_antialias`: timm's antialiased bicubic, HF's `interpolate_pos_encoding`, SigLIP2's antialiased
        bilinear). Loading, training from a checkpoint and packed batches all resample here. ValueError when the
        table does not hold `old_grid`."""
        prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        cells = table.shape[1] - prefix
        if old_grid is None:
            side = math.isqrt(max(cells, 0))
            old_grid = (side, side)
        if old_grid[0] * old_grid[1] != cells:
            raise ValueError(f"a position table of {table.shape[1]} rows is not {prefix} prefix rows + a "
                             f"{old_grid[0]}x{old_grid[1]} grid")
        return resample_abs_pos_embed(table, new_size=new_grid or tuple(self.patch_embed.grid_size),
                                      old_size=old_grid, num_prefix_tokens=prefix,
                                      interpolation=self.config.pos_embed_interpolation,
                                      antialias=self.config.pos_embed_antialias,
                                      align_corners=self.config.pos_embed_align_corners)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> tokens (B, prefix + h*w, D), position embedding added."""
        grid = self.patch_embed(x, flatten=False)  # (B, h, w, D); checks the images' shape, dtype and device
        if self.config.check_finite:
            check_finite(x)
        B, h, w, D = grid.shape
        x = grid.reshape(B, h * w, D)
        prefix = [t.expand(B, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        pos = self.pos_embed_for(h, w)
        if pos is not None and self.no_embed_class:
            x = x + pos.to(x.dtype)
        if prefix:
            x = torch.cat([*prefix, x], dim=1)
        if pos is not None and not self.no_embed_class:
            x = x + pos.to(x.dtype)
        order = tower.dense_order(self.config, h, w, x.device)
        if order is not None:
            x = x[:, order]  # merge groups consecutive (a merging model has no prefix tokens)
        return self.norm_pre(self.pos_drop(x))

    def rope_for(self, height: int, width: int) -> BlockRotations | None:
        """The 2D RoPE rotations of a (height, width) patch grid's tokens (prefix tokens unrotated); None without
        RoPE. In training mode they carry the configured coordinate augmentations (one draw per call)."""
        if self.rope is None:
            return None
        device = next(self.parameters()).device
        n, cells = self.num_prefix_tokens, height * width
        index = torch.arange(-n, cells, device=device).clamp(min=0)  # prefix slots: any cell, masked below
        order = tower.dense_order(self.config, height, width, device)
        if order is not None:
            index = order
        rows, cols = index // width, index % width
        size = torch.ones_like(index)
        coords = self.rope.coordinates(rows, cols, size * height, size * width)
        return BlockRotations(self.rope, coords, torch.arange(-n, cells, device=device) >= 0)

    def _block(self, index: int, x: torch.Tensor, attn_mask: torch.Tensor | Segments | None,
               rope: BlockRotations | None, windows: torch.Tensor | Segments | None = None) -> torch.Tensor:
        """Run block `index` on the model's kernel choice, recomputing it in backward when it is among the first N
        to recompute (under the same `attention.use` scope as its forward). A windowed block attends by `windows`."""
        block, rotation = self.blocks[index], None if rope is None else rope[index]
        if tower.windowed(self.config, index):
            attn_mask = windows
        if index < self.num_recomputing_layers and torch.is_grad_enabled():
            return checkpoint(block, x, attn_mask, self.attention_choice, rotation, use_reentrant=False,
                              context_fn=checkpoint_contexts)
        return block(x, attn_mask, self.attention_choice, rotation)

    def forward_blocks(self, x: torch.Tensor, attn_mask: torch.Tensor | Segments | None = None,
                       depth: int | None = None, rope: BlockRotations | None = None,
                       windows: torch.Tensor | Segments | None = None,
                       taps: dict[int, torch.Tensor | None] | None = None) -> torch.Tensor:
        """Tokens (B, T, D) through the first `depth` blocks (default: all), the first `num_recomputing_layers`
        recomputed in backward. `attn_mask`: a mask tensor, or `Segments` for packed sequences. A RoPE model needs
        its tokens' rotations, `rope` (`rope_for(h, w)`), and a windowed one its `windows` (mask or segments);
        `forward_features` finds them itself. The output of each block named in `taps` is stored there."""
        if self.rope is not None and rope is None:
            raise ValueError("this model rotates q and k by patch position (rope="
                             f"{self.config.rope!r}): pass rope=model.rope_for(h, w), or call forward_features")
        if self.config.window_size is not None and windows is None:
            raise ValueError("this model attends within windows in some blocks: pass their mask or segments as "
                             "windows=, or call forward_features")
        for i in range(len(self.blocks) if depth is None else depth):
            x = self._block(i, x, attn_mask, rope, windows)
            if taps is not None and i in taps:
                taps[i] = x
        return x

    def token_order(self, height: int, width: int) -> torch.Tensor | None:
        """The raster cell of each patch token of a dense (height, width) patch grid, in token order: a merging
        model keeps each merge group's tokens together (as the HF towers do); None for raster order."""
        return tower.dense_order(self.config, height, width, next(self.parameters()).device)

    def _grid_rope(self, images: torch.Tensor) -> BlockRotations | None:
        return None if self.rope is None else self.rope_for(*self.patch_embed.grid_for(*images.shape[-2:]))

    def _grid_windows(self, images: torch.Tensor) -> torch.Tensor | None:
        """The window mask of dense images' tokens (None without window attention)."""
        if self.config.window_size is None:
            return None
        h, w = self.patch_embed.grid_for(*images.shape[-2:])
        return tower.dense_windows(self.config, h, w, tower.dense_order(self.config, h, w, images.device),
                                   images.device)

    def forward_features(self, x: torch.Tensor | PackedBatch, attn_mask: torch.Tensor | None = None, *,
                         layer: int | None = None, norm: bool = True,
                         taps: dict[int, torch.Tensor | None] | None = None) -> torch.Tensor:
        """Images (B, C, H, W) -> tokens (B, T, D). A `PackedBatch` (from `model.pack`) -> tokens (S, T, D) in the
        batch's layout: pool them with `pool(tokens, batch=batch)` or split them with `batch.unpack`.

        `layer` is the block whose output to take: None or -1 the last, -2 the one before (DeepSeek-VL2's
        `select_layer`), 0..depth-1 counted from the first. `norm` applies the final norm. `taps` (a dict keyed by
        block index) receives those blocks' outputs. A merging model's tokens come merge group by merge group
        (`vitkit.models.tower`).
        """
        depth = self.blocks_to_run(layer)
        if isinstance(x, PackedBatch):
            if attn_mask is not None:
                raise ValueError("a PackedBatch takes its attention mask from its segments; leave attn_mask=None")
            return packed_forward.forward_features(self, x, depth, norm, taps)
        tokens = self.embed(x)
        tokens = self.forward_blocks(tokens, attn_mask, depth, self._grid_rope(x), self._grid_windows(x), taps)
        return self.norm(tokens) if norm else tokens

    def blocks_to_run(self, layer: int | None) -> int:
        """How many blocks give the output of block `layer` (None: all); ValueError naming the range."""
        n = len(self.blocks)
        if layer is None:
            return n
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
            raise ValueError(f"layer {layer!r} is out of range for a model of {n} blocks; use -{n}..{n - 1} "
                             "(-1 = the last block)")
        return layer % n + 1

    def resolve_pool(self, pool: str | None = None) -> str:
        """The pooling `pool` names, checked against this model: one of `FEATURE_POOLS` ('none' keeps every token;
        '' is the same). None is the model's own head's: 'map' with a MAP head, else `global_pool`."""
        if pool is None:
            pool = "map" if self.attn_pool is not None else self.global_pool
        pool = pool or "none"
        if pool not in FEATURE_POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(FEATURE_POOLS)}")
        if pool == "token" and self.cls_token is None:
            raise ValueError("pool 'token' needs a class token, which this model has not; use pool 'avg'")
        if pool == "map" and self.attn_pool is None:
            raise ValueError("pool 'map' needs an attention-pool (MAP) head, which this model has not; use pool 'avg'")
        return pool

    def pool(self, tokens: torch.Tensor, pool: str | None = None,
             batch: PackedBatch | None = None) -> torch.Tensor | list[torch.Tensor]:
        """Tokens -> one row per image by `pool` (see `resolve_pool`; default: the model's own). Tokens (B, T, D)
        -> (B, D); packed tokens (S, T, D) with their `batch` -> (I, D) in image order, each image pooled over its
        own tokens. 'none' keeps the tokens: (B, T, D), or each image's (T_i, D) for packed ones. A model with a
        patch merger merges the tokens first (per image or clip, see `encode`) and pools those."""
        pool = self.resolve_pool(pool)
        if self.merger is not None:  # merged tokens first, then pooled
            merged = tower.merge_packed(self.merger, tokens, batch) if batch is not None else self.merger(tokens)
            return tower.reduce(merged, pool)
        if batch is not None:
            return packed_forward.pool_packed(self, tokens, batch, pool)
        if pool == "none":
            return tokens
        if pool == "map":
            return self.attn_pool(tokens[:, self.num_prefix_tokens:], attention=self.attention_choice)
        return pool_tokens(tokens, pool, self.num_prefix_tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor | PackedBatch) -> torch.Tensor | list[torch.Tensor]:
        """Images (B, C, H, W) -> logits (or tokens); a `PackedBatch` goes to `forward_packed`."""
        if isinstance(x, PackedBatch):
            return self.forward_packed(x)
        x = self.forward_features(x)
        return x if self.ignore_head else self.forward_head(x)

    # -- packed batches (NaViT) -----------------------------------------------------------------

    def forward_packed(
        self,
        batch: PackedBatch,
        *,
        pre_logits: bool = False,
        return_tokens: bool = False,
        token_drop: TokenDrop | None = None,
    ) -> torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Images of different sizes packed by `vitkit.pack_images` -> per-image logits (I, classes).

        Attention stays inside each image on the backend's varlen kernel; each image gets its own prefix
        tokens, its own resampled position table and its own pooling, so row i equals `model(image_i[None])`
        with `dynamic_img_size`. `pre_logits` returns pooled features; `return_tokens` also returns each
        image's tokens; `global_pool=''` / `ignore_head` return the tokens only. `token_drop` (a rate or a
        function of the image's (height, width)) overrides the model's NaViT token dropping, which runs
        in training mode only. A batch packed for another number of prefix tokens is repacked.
        """
        return packed_forward.forward_packed(
            self, batch, pre_logits=pre_logits, return_tokens=return_tokens, token_drop=token_drop
        )

    def pack(self, images: Sequence[torch.Tensor] | torch.Tensor, max_tokens: int | None = None,
             pad_to_patch: bool | None = None) -> PackedBatch:
        """`vitkit.pack_images` with this model's patch size and prefix tokens (padding: `dynamic_img_pad`).
        `max_tokens` defaults to room for four images of the model's size (or patch budget, `max_patches`, or pixel
        bound, `max_pixels`), and at least the largest image given."""
        from ..packing import pack_images

        if max_tokens is None:
            (ph, pw), n = self.patch_embed.patch_size, self.num_prefix_tokens
            largest = max((-(-image.shape[-2] // ph) * -(-image.shape[-1] // pw) for image in images), default=0)
            cells = self.config.max_patches or math.prod(self.patch_embed.grid_size)
            if self.config.max_pixels is not None:  # Qwen-VL sizing: images up to max_pixels
                cells = self.config.max_pixels // (ph * pw)
            max_tokens = max(4 * (cells + n), largest + n)
        options = self.packing_options()
        if pad_to_patch is not None:
            options["pad_to_patch"] = pad_to_patch
        batch = pack_images(images, max_tokens=max_tokens, **options)
        for grid in set(batch.grid_sizes):
            tower.check_grid(self.config, *grid)
        return batch

    def packing_options(self) -> dict[str, object]:
        """The arguments of `vitkit.pack_images` (but `max_tokens`) that pack images for this model: its patch size,
        prefix tokens, padding, patch order (windows, merge groups) and frames per patch."""
        return dict(patch_size=self.patch_embed.patch_size, pad_to_patch=self.patch_embed.dynamic_img_pad,
                    num_prefix_tokens=self.num_prefix_tokens, tiles=tower.tiles(self.config),
                    temporal_patch_size=self.config.temporal_patch_size)

    def encode(self, x: torch.Tensor | PackedBatch) -> VisionTokens:
        """What a vision-language model receives: images (B, C, H, W) or a packed batch of images and clips
        (`pack`) -> merged tokens per image or clip, in the HF towers' order, and the deepstack features."""
        return tower.encode(self, x)

    # -- feature extraction ---------------------------------------------------------------------

    def _resolve_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        n = len(self.blocks)
        if indices is None:
            return list(range(n))
        if isinstance(indices, int):
            if not 0 < indices <= n:
                raise ValueError(f"indices={indices} asks for the last {indices} blocks; the model has {n}")
            return list(range(n - indices, n))
        resolved = sorted({i + n if i < 0 else i for i in indices})
        if any(not 0 <= i < n for i in resolved):
            raise ValueError(f"indices {list(indices)} out of range for {n} blocks (use -{n}..{n - 1})")
        return resolved

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list | tuple[torch.Tensor, list]:
        """Block outputs at `indices` (an int n: the last n), as (B, D, h, w) 'NCHW' or (B, N, D) 'NLC'.

        With `norm=True` each is passed through the final norm (DeepSeek-VL2 style); without it they
        are raw block outputs (HF `hidden_states`). Returns (final tokens, intermediates) unless
        `intermediates_only`.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take = self._resolve_indices(indices)
        images, x = x, self.embed(x)
        B, _, H, W = images.shape
        h, w = self.patch_embed.grid_for(H, W)
        rope = self.rope_for(h, w)
        last = take[-1] if (stop_early or intermediates_only) else len(self.blocks) - 1
        intermediates = []
        windows = self._grid_windows(images)
        for i in range(last + 1):
            x = self._block(i, x, None, rope, windows)
            if i in take:
                out = self.norm(x) if norm else x
                prefix, spatial = out[:, : self.num_prefix_tokens], out[:, self.num_prefix_tokens:]
                if output_fmt == "NCHW":
                    order = self.token_order(h, w)
                    if order is not None:  # merge-group order -> raster
                        spatial = spatial[:, torch.argsort(order)]
                    spatial = spatial.reshape(B, h, w, -1).permute(0, 3, 1, 2)  # (B, N, D) -> (B, D, h, w)
                intermediates.append((spatial, prefix) if return_prefix_tokens else spatial)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def forward_hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """HF-style `hidden_states`: the embedding output then every block's output, each (B, T, D), no final
        norm. `[-2]` is what vision-language models that skip the last block take."""
        images, x = x, self.embed(x)
        rope, windows = self._grid_rope(images), self._grid_windows(images)
        hidden = [x]
        for i in range(len(self.blocks)):
            x = self._block(i, x, None, rope, windows)
            hidden.append(x)
        return hidden

    # -- training helpers -----------------------------------------------------------------------

    def set_grad_checkpointing(self, enable: bool | int = True) -> None:
        """Recompute blocks in backward: True all, False none, an int n the first n (at most all)."""
        n = len(self.blocks) if enable is True else (0 if enable is False else int(enable))
        if n < 0:
            raise ValueError(f"grad checkpointing needs a block count >= 0, got {n}")
        self.num_recomputing_layers = min(n, len(self.blocks))
        self.config = self.config.replace(num_recomputing_layers=n)

    def set_attention(self, backend: str, *, deterministic: bool | None = None, fallback: bool = False) -> None:
        """Run every attention layer (blocks and MAP pool) on `backend` from now on ('auto' picks per call), with
        `deterministic` kernels when it is given (else as before). A backend that cannot run a call raises
        `BackendUnavailableError`, unless `fallback` makes the name only a preference (`auto` then runs it, with
        one logged line). The kernel is run-time state: `save_pretrained` does not write it. For a scope only,
        use `vitkit.attention.use(backend)`, which overrides this choice."""
        if deterministic is None:
            deterministic = self.attention_choice.deterministic
        self.attention_choice = AttentionChoice(backend, deterministic, fallback)

    @property
    def attention_backend(self) -> str:
        """The backend the model asks for (`set_attention` changes it; 'auto' picks per call)."""
        return self.attention_choice.backend

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed: position table and learned tokens."""
        names = {"pos_embed", "cls_token", "reg_token", "attn_pool.latent", "rope.freqs"}
        return {n for n, _ in self.named_parameters() if n in names}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new (freshly initialised) head for `num_classes`; 0 removes it."""
        changes: dict[str, object] = {"num_classes": num_classes}
        if global_pool is not None and global_pool != self.global_pool:
            if (global_pool == "map") != (self.attn_pool is not None):
                raise ValueError("reset_classifier cannot add or remove a MAP head; build a new model instead")
            changes["global_pool"] = global_pool
        self.config = self.config.replace(**changes)
        self.num_classes = num_classes
        self.global_pool = self.config.global_pool
        like = next(self.parameters())
        self.head = (
            nn.Linear(self.embed_dim, num_classes, device=like.device, dtype=like.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)


def _init_linear_jax(name: str, module: nn.Linear) -> None:
    if name.startswith("head"):
        nn.init.zeros_(module.weight)
        nn.init.zeros_(module.bias)
        return
    nn.init.xavier_uniform_(module.weight)
    if module.bias is not None:
        if ".mlp." in f".{name}." and "fc" in name:
            nn.init.normal_(module.bias, std=1e-6)
        else:
            nn.init.zeros_(module.bias)
