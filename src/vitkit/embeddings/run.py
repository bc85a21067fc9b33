"""`vitkit.embed`: a tower's features for many images, returned as a tensor or written as an embeddings directory.

Rows come in the source's order, in batches that never cross a shard, so a shard's values depend only on the
images and settings: a resumed run and any number of processes (each takes shards rank, rank + world, ...) write
the same bytes as one straight run. Decoding runs in DataLoader workers and writing in a thread, beside the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import __version__
from ..data import DataConfig
from ..data.packed import PackCollate
from ..runtime import InferencePrecision, inference_precision
from .features import FeatureSpec, features
from .sources import Source, open_source, tensor_source
from .store import (
    DTYPES,
    Layout,
    check_or_write_config,
    complete,
    names_digest,
    run_key,
    weights_digest,
    write_index,
    write_shard,
)

NONE_SHARD_BYTES = 256 * 2**20  # with pool 'none' a row is a whole token grid: shards capped at this size


@dataclasses.dataclass(frozen=True)
class _Collate:
    """DataLoader `collate_fn` in the workers: the images as a PackedBatch (`pack`), or as groups of equal size."""

    pack: PackCollate | None

    def __call__(self, samples: list[tuple[torch.Tensor, int]]) -> list:
        if self.pack is not None:
            return [self.pack(samples)[0]]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (image, _) in enumerate(samples):
            groups.setdefault(tuple(image.shape), []).append(i)
        return [(idx, torch.stack([samples[i][0] for i in idx])) for idx in groups.values()]


def _rows_of(model: nn.Module, parts: list, spec: FeatureSpec, device: torch.device,
             precision: InferencePrecision, count: int) -> torch.Tensor | list[torch.Tensor]:
    """One collated batch -> its rows in sample order (a list of token tensors for packed pool 'none')."""
    with precision.context(device):
        if not isinstance(parts[0], tuple):  # packed: one PackedBatch, rows already in image order
            out = features(model, parts[0].to(device, precision.inputs), spec)
            return [t.float() for t in out] if isinstance(out, list) else out.float()
        rows: list = [None] * count
        for idx, images in parts:
            for i, row in zip(idx, features(model, images.to(device, precision.inputs), spec).float(), strict=True):
                rows[i] = row
    return torch.stack(rows) if len({row.shape for row in rows}) == 1 else rows  # pool 'none', mixed sizes


def _batches(layout: Layout, shards: Sequence[int], batch_size: int) -> list[list[int]]:
    return [list(span[i : i + batch_size]) for k in shards for span in [layout.span(k)]
            for i in range(0, len(span), batch_size)]


def _settings_check(batch_size: int, workers: int, shard_rows: int, dtype: str) -> None:
    for name, value, least in (("batch_size", batch_size, 1), ("workers", workers, 0), ("shard_rows", shard_rows, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def embed(
    model: nn.Module,
    images: str | Path | Sequence[str | Path] | torch.Tensor | Sequence[torch.Tensor],
    *,
    pool: str | None = None,
    layer: int = -1,
    norm: bool = True,
    l2: bool = False,
    batch_size: int = 64,
    precision: str = "fp32",
    packing: bool = False,
    max_tokens: int | None = None,
    max_patches: int | None = None,
    workers: int = 0,
    split: str | None = None,
    out: str | Path | None = None,
    dtype: str = "fp32",
    shard_rows: int = 10_000,
    rank: int = 0,
    world: int = 1,
    source: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor | list[torch.Tensor] | Path:
    """Features of `images` from block `layer` of `model`, pooled by `pool` (default: the model's own).

    `images`: a folder (class folders give labels), a list of image files, 'digits' (with `split`), or tensors
    already prepared for the model ((N, C, H, W), or a list of (C, H, W) of any sizes). Files get the model's
    eval transform (timm's centre crop; with `packing`, each keeps its aspect ratio and batches are packed).
    `max_patches` (implies packing) sizes each image to its NaFlex grid under that patch budget (SigLIP2's rule;
    a NaFlex model's config carries its own budget). A model with Qwen-VL's pixel bounds (`min_pixels`,
    `max_pixels`) always runs packed, each image at its `smart_resize` size; with pool 'none' its rows are each
    image's merged tokens.
    Returns rows (N, D) (tokens (N, T, D) with pool 'none'), or with `out` writes an embeddings directory and
    returns its path: a second call into the same `out` skips the shards already there. `rank`/`world` split the
    shards between processes (rank 0 writes the config and index); `source` names the model in the config;
    `progress(rows, total)` is called after each batch with its rows and the rows this call will embed.
    `precision` (see `vitkit.runtime.INFERENCE_PRECISIONS`): 'fp32' by default, so rows are the same on every
    machine; 'auto' takes bf16 where the device multiplies it natively. The model is run at it as a converted copy
    (the caller's is not changed), and an embeddings directory records the precision it resolved to.
    """
    _settings_check(batch_size, workers, shard_rows, dtype)
    spec = FeatureSpec.of(model, pool=pool, layer=layer, norm=norm, l2=l2)
    data_config = DataConfig.of(model.config, max_patches)
    packing = packing or max_patches is not None or data_config.max_pixels is not None
    prepared = isinstance(images, torch.Tensor) or (
        not isinstance(images, (str, Path)) and len(images) > 0 and isinstance(images[0], torch.Tensor))
    src: Source = tensor_source(images) if prepared else open_source(images, data_config, split=split,
                                                                        packing=packing)
    device = next(model.parameters()).device
    chosen, _ = inference_precision(precision, device)
    if packing:
        max_tokens = max_tokens or data_config.max_tokens(model.num_prefix_tokens)
    elif max_tokens is not None:
        raise ValueError("max_tokens needs packing=True")
    collate = _Collate(PackCollate.for_model(model, max_tokens) if packing else None)
    layout = Layout(len(src.names), shard_rows)
    pending = list(range(layout.num_shards))
    key = None
    if out is not None:
        if spec.pool == "none":  # shards capped in bytes, at most tokens a row can have
            tokens = (data_config.max_tokens(model.num_prefix_tokens) // 4 if packing else
                      model.num_prefix_tokens + model.patch_embed.num_patches)
            width = model.num_features
            if getattr(model, "merger", None) is not None:
                tokens, width = tokens // model.merger.group, model.config.merge_dim or width
            shard_rows = max(1, min(shard_rows, NONE_SHARD_BYTES // (tokens * width * 4)))
            layout = Layout(len(src.names), shard_rows)
        out = Path(out)
        config = {
            "vitkit": __version__,
            "model": {"source": source or type(model).__name__, "digest": weights_digest(model),
                      "config": model.config.to_dict()},
            "features": spec.as_dict(),
            "transform": "prepared tensors" if prepared else dataclasses.asdict(data_config),
            "packing": {"max_tokens": max_tokens} if packing else None,
            "data": src.description, "rows": layout.rows, "names": names_digest(src.names),
            "shard_rows": layout.shard_rows, "dtype": dtype, "precision": chosen.name, "classes": src.classes,
        }
        key = run_key(config)
        _each_rank(rank, world, lambda: check_or_write_config(out, config))
        if rank == 0:
            write_index(out, src.names, [src.label_name(i) for i in range(layout.rows)], layout)
        done = complete(out, layout, key)
        pending = [k for k in range(layout.num_shards) if k % world == rank and k not in done]
    loader = DataLoader(src.dataset, batch_sampler=_batches(layout, pending, batch_size), collate_fn=collate,
                        num_workers=workers, pin_memory=device.type == "cuda")
    runner = chosen.prepare(model, device, inplace=False)  # the caller's model as it was, whatever the precision
    was_training = runner.training
    runner.eval()
    try:
        with torch.inference_mode(), ThreadPoolExecutor(max_workers=1) as writer:
            rows = _run(runner, loader, spec, device, chosen, layout, pending, out, key, dtype, writer, progress)
    finally:
        runner.train(was_training)
    if out is not None:
        return out
    if rows and all(isinstance(r, torch.Tensor) for r in rows) and len({r.shape[1:] for r in rows}) == 1:
        return torch.cat(rows)
    return [row for part in rows for row in (part if isinstance(part, list) else part.unbind(0))]


def _each_rank(rank: int, world: int, step: Callable[[], None]) -> None:
    """Run `step` on rank 0 first, then on the others (they only read what rank 0 wrote)."""
    import torch.distributed as dist

    sync = world > 1 and dist.is_initialized()
    if rank == 0:
        step()
    if sync:
        dist.barrier()
    if rank != 0:
        step()


def _run(model: nn.Module, loader: DataLoader, spec: FeatureSpec, device: torch.device, precision: InferencePrecision,
         layout: Layout, pending: list[int], out: Path | None, key: str | None, dtype: str,
         writer: ThreadPoolExecutor, progress: Callable[[int, int], None] | None) -> list:
    """Batches through the model; with `out`, each finished shard goes to the writer thread."""
    results: list = []
    shard: list = []
    writes: list[Future] = []
    shards = iter(pending)
    current = next(shards, None)
    total = sum(len(layout.span(k)) for k in pending)
    for batch_index, parts in enumerate(loader):
        count = len(loader.batch_sampler[batch_index])
        rows = _rows_of(model, parts, spec, device, precision, count)
        rows = rows.cpu() if isinstance(rows, torch.Tensor) else [r.cpu() for r in rows]
        if progress is not None:
            progress(count, total)
        if out is None:
            results.append(rows)
            continue
        shard.append(rows)
        if sum(len(r) for r in shard) == len(layout.span(current)):
            ragged = any(isinstance(r, list) for r in shard)  # pool 'none' on images of different sizes
            done = [row for part in shard for row in part] if ragged else torch.cat(shard)
            writes.append(writer.submit(write_shard, out, current, done, key, dtype))
            shard, current = [], next(shards, None)
    for write in writes:
        write.result()  # a failed write raises here
    return results
