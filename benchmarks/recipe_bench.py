"""The fine-tuning recipe on a real folder: `vitkit train` against the same recipe assembled from timm's parts.

The digits are written as a class folder of 32x32 RGB JPEGs (the fixed 80/20 split, `write_digits_folder`). A
ViT-Tiny shape with 4-px patches trains from scratch for `--epochs` with the same flags on both sides:
RandAugment, mixup + cutmix, EMA of the weights, layer decay, AdamW with warm-up + cosine, label smoothing, drop
path. The timm side is `create_transform`, `Mixup`, `SoftTargetCrossEntropy`, `ModelEmaV3` and
`create_optimizer_v2(layer_decay=...)` in a plain loop; each epoch evaluates the live and the EMA weights and the
best of either counts, as `vitkit train` does. A third run is `vitkit train` without the recipe. Needs timm.

    python benchmarks/recipe_bench.py --epochs 30
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import torch

from vitkit.data import write_digits_folder
from vitkit.train import TrainOptions, train

MODEL = "vit_tiny_patch16_224"
COMMON = dict(img_size=32, batch_size=64, lr=1e-3, weight_decay=0.05, warmup_epochs=2.0, min_lr=1e-5,
              label_smoothing=0.1, drop_path=0.1, hflip=0.0)
RECIPE = dict(aa="rand-m9-mstd0.5-inc1", mixup=0.8, cutmix=1.0, model_ema=True, model_ema_decay=0.995,
              layer_decay=0.75)


def run_vitkit(data: Path, out: Path, epochs: int, workers: int, recipe: bool) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    options = TrainOptions(model=MODEL, data=str(data), epochs=epochs, workers=workers, out=str(out),
                           overrides=("patch_size=4",), **COMMON, **(RECIPE if recipe else {}))
    summary = train(options)
    return {"top1": summary.best_top1, "last_top1": summary.last.top1, "seconds": summary.seconds,
            "weights": summary.best_weights}


def run_timm(data: Path, epochs: int, workers: int) -> dict:
    import timm
    from timm.data import Mixup, create_dataset, create_transform, resolve_data_config
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3
    from timm_compat import patch_timm_posterize

    patch_timm_posterize()

    torch.manual_seed(0)
    model = timm.create_model(MODEL, img_size=COMMON["img_size"], patch_size=4, num_classes=10,
                              drop_path_rate=COMMON["drop_path"])
    size = COMMON["img_size"]
    config = resolve_data_config({"input_size": (3, size, size)}, model=model)
    train_tf = create_transform(**config, is_training=True, auto_augment=RECIPE["aa"], hflip=COMMON["hflip"])
    eval_tf = create_transform(**config, is_training=False)
    train_set = create_dataset("", root=str(data / "train"), is_training=True, transform=train_tf)
    val_set = create_dataset("", root=str(data / "val"), transform=eval_tf)
    batch = COMMON["batch_size"]
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=batch, num_workers=workers,
                                             persistent_workers=workers > 0)
    mix = Mixup(mixup_alpha=RECIPE["mixup"], cutmix_alpha=RECIPE["cutmix"], label_smoothing=COMMON["label_smoothing"],
                num_classes=10)
    criterion = SoftTargetCrossEntropy()
    optimizer = create_optimizer_v2(model, "adamw", lr=COMMON["lr"], weight_decay=COMMON["weight_decay"],
                                    layer_decay=RECIPE["layer_decay"])
    for group in optimizer.param_groups:  # timm's own schedulers apply `lr_scale`; torch's LambdaLR needs it in lr
        group["lr"] = COMMON["lr"] * group.get("lr_scale", 1.0)
    steps = len(loader) * epochs
    warmup = round(COMMON["warmup_epochs"] * len(loader))
    floor = COMMON["min_lr"] / COMMON["lr"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else floor + (
        1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, steps - warmup)))))
    ema = ModelEmaV3(model, decay=RECIPE["model_ema_decay"])
    best, last, start = -1.0, 0.0, time.perf_counter()
    for _ in range(epochs):
        model.train()
        for images, labels in loader:
            images, targets = mix(images, labels)
            loss = criterion(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            ema.update(model)
        last = accuracy(model, val_loader)
        best = max(best, last, accuracy(ema.module, val_loader))
    return {"top1": best, "last_top1": last, "seconds": time.perf_counter() - start}


@torch.no_grad()
def accuracy(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> float:
    model.eval()
    right = total = 0
    for images, labels in loader:
        right += (model(images).argmax(dim=1) == labels).sum().item()
        total += len(labels)
    return right / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/tmp/vitkit_recipe_bench"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = args.root / "digits32"
    if not (data / "val").is_dir():
        write_digits_folder(data, size=32)
    results = {
        "vitkit, recipe": run_vitkit(data, args.root / "vitkit_recipe", args.epochs, args.workers, recipe=True),
        "timm parts, recipe": run_timm(data, args.epochs, args.workers),
        "vitkit, no recipe": run_vitkit(data, args.root / "vitkit_plain", args.epochs, args.workers, recipe=False),
    }
    timm_seconds = results["timm parts, recipe"]["seconds"]
    print(f"digits as 32x32 RGB JPEGs (1,437 train / 360 val), {MODEL} shape with 4-px patches, {args.epochs} "
          f"epochs, batch {COMMON['batch_size']}, {args.workers} workers; recipe: --aa {RECIPE['aa']} --mixup "
          f"{RECIPE['mixup']} --cutmix {RECIPE['cutmix']} --model-ema --model-ema-decay {RECIPE['model_ema_decay']} "
          f"--layer-decay {RECIPE['layer_decay']}\n")
    print("| run | best top-1 | last top-1 | wall time | vs timm time |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {100 * r['top1']:.2f}% | {100 * r['last_top1']:.2f}% | {r['seconds']:.0f} s | "
              f"{r['seconds'] / timm_seconds:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
