"""Training-loader throughput: vitkit's folder dataset + transforms against timm's `create_dataset` + `create_loader`.

A folder of generated 256x256 JPEGs goes through the 224-px training transforms (random-resized crop, flip,
RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, bicubic) with the same DataLoader settings (batch, workers,
persistent workers). The two loaders take turns for `--rounds` epochs each; the first `--skip` batches of an epoch
(workers starting) are not timed. Prints a markdown table; `--json` writes the numbers.

    python benchmarks/loader_bench.py --images 2000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

AA, REPROB, SIZE = "rand-m9-mstd0.5-inc1", 0.25, 224


def make_folder(root: Path, images: int, side: int = 256, classes: int = 10) -> Path:
    """`images` JPEGs of smooth random colour fields with noise (photo-like to a JPEG coder), in class folders."""
    rng = np.random.default_rng(0)
    done = root / f".complete-{images}-{side}"
    if done.exists():
        return root
    for i in range(images + classes):  # the last `classes` images: one per class in val/
        folder = root / ("train" if i < images else "val") / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((side, side), Image.BICUBIC)
        pixels = np.asarray(small, dtype=np.int16) + rng.integers(-12, 13, (side, side, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    done.touch()
    return root


def vitkit_loader(root: Path, batch: int, workers: int) -> DataLoader:
    from vitkit.data import Augment, DataConfig, ShardedBatchSampler, image_folder

    data = DataConfig((SIZE, SIZE), 3, (0.5,) * 3, (0.5,) * 3, crop_pct=0.9, interpolation="bicubic")
    splits = image_folder(root, data, augment=Augment(aa=AA, reprob=REPROB))
    sampler = ShardedBatchSampler(len(splits.train), batch, epoch_keys=True)
    return DataLoader(splits.train, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0)


def timm_loader(root: Path, batch: int, workers: int) -> DataLoader:
    from timm.data import create_dataset, create_loader
    from timm_compat import patch_timm_posterize

    patch_timm_posterize()

    dataset = create_dataset("", root=str(root / "train"), split="train", is_training=True)
    return create_loader(dataset, input_size=(3, SIZE, SIZE), batch_size=batch, is_training=True,
                         use_prefetcher=False, auto_augment=AA, re_prob=REPROB, re_mode="pixel",
                         interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3, num_workers=workers,
                         persistent_workers=workers > 0, crop_pct=0.9)


def epoch_rate(loader: DataLoader, skip: int) -> float:
    """Images per second over one epoch, after its first `skip` batches."""
    sampler = getattr(loader, "batch_sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(getattr(sampler, "epoch", 0) + 1)
    count, start = 0, None
    for i, (images, _) in enumerate(loader):
        if i == skip:
            start = time.perf_counter()
        elif i > skip:
            count += len(images)
    assert start is not None, "the epoch has no timed batches; use more images or a smaller --skip"
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/tmp/vitkit_loader_bench"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)  # each worker is one process on one core, as in training
    root = make_folder(args.root, args.images)
    loaders = {"vitkit": vitkit_loader(root, args.batch_size, args.workers),
               "timm": timm_loader(root, args.batch_size, args.workers)}
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(args.rounds):
        for name, loader in loaders.items():
            rates[name].append(epoch_rate(loader, args.skip))
    median = {name: statistics.median(r) for name, r in rates.items()}
    print(f"{args.images} JPEGs of 256x256 -> {SIZE} px: random-resized crop, flip, {AA}, random erasing {REPROB}, "
          f"bicubic; batch {args.batch_size}, {args.workers} workers, median of {args.rounds} epochs\n")
    print("| loader | img/s | vs timm |\n|---|---|---|")
    for name, rate in median.items():
        print(f"| {name} | {rate:.0f} | {rate / median['timm']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"rates": rates, "median": median}, indent=2) + "\n")


if __name__ == "__main__":
    main()
