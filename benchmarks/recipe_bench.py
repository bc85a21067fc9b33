"""The fine-tuning recipe on a real folder: `vitkit train` against the same recipe assembled from timm's parts.

The digits are written as a class folder of 32x32 RGB JPEGs (the fixed 80/20 split, `write_digits_folder`). A
ViT-Tiny shape with 4-px patches trains from scratch for `--epochs` with the same flags on both sides:
RandAugment, mixup + cutmix, EMA of the weights, layer decay, AdamW with warm-up + cosine, label smoothing, drop
path. The timm side is `create_transform`, `Mixup`, `SoftTargetCrossEntropy`, `ModelEmaV3` and
`create_optimizer_v2(layer_decay=...)` in a plain loop; each epoch evaluates the live and the EMA weights and the
best of either counts, as `vitkit train` does. A third run is `vitkit train` without the recipe. Needs timm.

`--mode finetune` is the use the recipe is for: a tower pretrained elsewhere, fine-tuned on the digits folder with
and without the recipe. The tower is pretrained (no recipe) on capital letters rendered the way the digits were
made (32x32 bitmaps counted in 4x4 blocks, 17 grey levels, upscaled), so no digit is seen before fine-tuning.

    python benchmarks/recipe_bench.py --epochs 30
    python benchmarks/recipe_bench.py --mode finetune --pretrain-epochs 10 --epochs 10
    python benchmarks/recipe_bench.py --mode digits --epochs 50 --seeds 0 1
    python benchmarks/recipe_bench.py --mode digits --model vit_tiny_patch16_224 --patch-size 8 --lr 1e-3 \
        --aa rand-m7-mstd0.5-inc1 --model-ema-decay 0.995 --scale 1 1 --epochs 60 --seeds 0 1

`--mode digits` asks whether the recipe helps at all on 1,437 images: one model trained from scratch long enough to
fit the data (by default `vitkit train`'s own, vit_digits at 32 px with 4-px patches), with and without the recipe
at values sized for so few images (`LONG_RECIPE`, `--aa`, `--model-ema-decay`), for each of `--seeds`; both sides
crop `--scale` of the area (timm's 8-100% cuts most of a 32-px digit away).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vitkit.data import write_digits_folder
from vitkit.data.transforms import resize
from vitkit.runtime import atomic_path
from vitkit.train import TrainOptions, train

MODEL = "vit_tiny_patch16_224"
COMMON = dict(img_size=32, batch_size=64, lr=1e-3, weight_decay=0.05, warmup_epochs=2.0, min_lr=1e-5,
              label_smoothing=0.1, drop_path=0.1, hflip=0.0)
RECIPE = dict(aa="rand-m9-mstd0.5-inc1", mixup=0.8, cutmix=1.0, model_ema=True, model_ema_decay=0.995,
              layer_decay=0.75)


def cli_flags(options: dict) -> str:
    """TrainOptions fields as `vitkit train` spells them: {'model_ema': True, 'mixup': 0.8} -> '--model-ema --mixup
    0.8'."""
    return " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in options.items())


RECIPE_FLAGS = cli_flags(RECIPE)
# --mode digits: the recipe at values sized for 1,437 images (--aa and the EMA decay are options)
LONG_RECIPE = dict(mixup=0.2, cutmix=0.2, mixup_prob=0.5, model_ema=True, layer_decay=0.9)
FINETUNE = dict(COMMON, lr=5e-4, warmup_epochs=1.0)  # from a pretrained tower: half the learning rate, short warm-up
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def write_letters_folder(root: Path, per_class: int, size: int = 32, seed: int = 0) -> Path:
    """Capital letters as root/{train,val}/<letter>/*.jpg (80/20), made as the digits were: a glyph of random
    size, stroke, shift and tilt drawn on 32x32 bits, pixels counted in 4x4 blocks (8x8, 17 grey levels), upscaled
    to `size` like `write_digits_folder`: a pretraining set of the same look with no digit in it."""
    rng = np.random.default_rng(seed)
    for letter in LETTERS:
        for i in range(per_class):
            canvas = Image.new("L", (32, 32))
            font = ImageFont.load_default(size=int(rng.integers(30, 44)))
            ImageDraw.Draw(canvas).text((16 + int(rng.integers(-2, 3)), 16 + int(rng.integers(-2, 3))), letter,
                                        fill=255, font=font, anchor="mm", stroke_width=int(rng.integers(0, 3)),
                                        stroke_fill=255)
            bits = np.asarray(canvas.rotate(float(rng.uniform(-10, 10)), resample=Image.BILINEAR)) > 127
            blocks = torch.tensor(bits.reshape(8, 4, 8, 4).sum(axis=(1, 3)) / 16.0, dtype=torch.float32)[None]
            pixels = (resize(blocks, (size, size))[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            folder = root / ("train" if i < 0.8 * per_class else "val") / letter
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / f"{i:04d}.jpg") as tmp:
                Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(tmp, format="JPEG", quality=95)
    return root


def run_vitkit(data: Path, out: Path, epochs: int, workers: int, recipe: bool, pretrained: Path | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = dict(pretrained=str(pretrained)) if pretrained else dict(model=MODEL, overrides=("patch_size=4",))
    options = TrainOptions(data=str(data), epochs=epochs, workers=workers, out=str(out), **start,
                           **(FINETUNE if pretrained else COMMON), **(RECIPE if recipe else {}))
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


def finetune(args: argparse.Namespace, data: Path) -> None:
    """Pretrain on the letters without the recipe, then fine-tune on the digits with and without it."""
    letters = args.root / "letters32"
    if not (letters / "val").is_dir():
        write_letters_folder(letters, per_class=args.letters_per_class)
    tower = args.root / "letters_tower"
    pretrained = run_vitkit(letters, tower, args.pretrain_epochs, args.workers, recipe=False)
    results = {
        "letters tower (pretraining, no recipe)": pretrained,
        "fine-tuned on the digits, recipe": run_vitkit(data, args.root / "ft_recipe", args.epochs, args.workers,
                                                       recipe=True, pretrained=tower),
        "fine-tuned on the digits, no recipe": run_vitkit(data, args.root / "ft_plain", args.epochs, args.workers,
                                                          recipe=False, pretrained=tower),
    }
    report(f"{MODEL} shape with 4-px patches, pretrained {args.pretrain_epochs} epochs on {len(LETTERS)} rendered "
           f"capital letters ({args.letters_per_class} per class, 80/20 split; no recipe), then fine-tuned "
           f"{args.epochs} epochs on the digits as 32x32 RGB JPEGs (1,437 train / 360 val) at lr "
           f"{FINETUNE['lr']}, batch {FINETUNE['batch_size']}, {args.workers} workers; recipe: {RECIPE_FLAGS}",
           results, {"weights saved": lambda r: r["weights"]}, args.json)


def digits_long(args: argparse.Namespace, data: Path) -> None:
    """One model on the digits folder long enough to fit it, with and without `LONG_RECIPE`, for each seed."""
    shared = dict(model=args.model, img_size=32, overrides=(f"patch_size={args.patch_size}",), lr=args.lr,
                  warmup_epochs=3.0, hflip=0.0, scale=tuple(args.scale), epochs=args.epochs, workers=args.workers)
    recipe = dict(LONG_RECIPE, aa=args.aa, model_ema_decay=args.model_ema_decay)
    runs: dict[str, list[dict]] = {"recipe": [], "no recipe": []}
    for seed in args.seeds:
        for name, flags in (("recipe", recipe), ("no recipe", {})):
            out = args.root / f"long_{args.model}_{args.patch_size}_{name.replace(' ', '_')}_{seed}"
            shutil.rmtree(out, ignore_errors=True)
            summary = train(TrainOptions(data=str(data), out=str(out), seed=seed, **shared, **flags))
            runs[name].append({"seed": seed, "top1": summary.best_top1, "last_top1": summary.last.top1,
                               "seconds": summary.seconds, "weights": summary.best_weights})
    results = {f"vitkit train, {name}": {key: float(np.mean([r[key] for r in seeds])) for key in
                                          ("top1", "last_top1", "seconds")} | {"seeds": seeds}
               for name, seeds in runs.items()}
    per_seed = {"best / last top-1 per seed": lambda r: ", ".join(
        f"{100 * s['top1']:.2f} / {100 * s['last_top1']:.2f}" for s in r["seeds"])}
    report(f"{args.model} at 32 px with {args.patch_size}-px patches, --scale {args.scale[0]} {args.scale[1]} "
           f"--hflip 0, {args.epochs} epochs, batch {TrainOptions.batch_size}, lr {args.lr}, {args.workers} workers, "
           f"seeds {', '.join(map(str, args.seeds))} (top-1 and wall time: mean over seeds); "
           f"recipe: {cli_flags(recipe)}", results, per_seed, args.json)


def report(intro: str, results: dict[str, dict], extra: dict[str, Callable[[dict], str]], path: Path | None) -> None:
    """Print the runs as a markdown table (best and last top-1, wall time, `extra` columns); save them as JSON."""
    columns = {"best top-1": lambda r: f"{100 * r['top1']:.2f}%",
               "last top-1": lambda r: f"{100 * r['last_top1']:.2f}%",
               "wall time": lambda r: f"{r['seconds']:.0f} s", **extra}
    print(f"{intro}\n")
    print("| run | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(cell(r) for cell in columns.values()) + " |")
    if path:
        path.write_text(json.dumps(results, indent=2) + "\n")


MODES = {"finetune": finetune, "digits": digits_long}  # beside the default, "scratch" (in main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("scratch", *MODES), default="scratch")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--letters-per-class", type=int, default=100)
    long = parser.add_argument_group("--mode digits")
    long.add_argument("--model", default="vit_digits")
    long.add_argument("--patch-size", type=int, default=4)
    long.add_argument("--lr", type=float, default=TrainOptions.lr)
    long.add_argument("--scale", type=float, nargs=2, default=(0.35, 1.0), help="random-resized-crop area, both sides")
    long.add_argument("--aa", default="rand-m5-mstd0.5-inc1")
    long.add_argument("--model-ema-decay", type=float, default=0.99)
    long.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/tmp/vitkit_recipe_bench"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = args.root / "digits32"
    if not (data / "val").is_dir():
        write_digits_folder(data, size=32)
    if args.mode in MODES:
        MODES[args.mode](args, data)
        return
    results = {
        "vitkit, recipe": run_vitkit(data, args.root / "vitkit_recipe", args.epochs, args.workers, recipe=True),
        "timm parts, recipe": run_timm(data, args.epochs, args.workers),
        "vitkit, no recipe": run_vitkit(data, args.root / "vitkit_plain", args.epochs, args.workers, recipe=False),
    }
    timm_seconds = results["timm parts, recipe"]["seconds"]
    report(f"digits as 32x32 RGB JPEGs (1,437 train / 360 val), {MODEL} shape with 4-px patches, {args.epochs} "
           f"epochs, batch {COMMON['batch_size']}, {args.workers} workers; recipe: {RECIPE_FLAGS}", results,
           {"vs timm time": lambda r: f"{r['seconds'] / timm_seconds:.2f}"}, args.json)


if __name__ == "__main__":
    main()
