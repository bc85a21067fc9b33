"""`vitkit embed` against the bare model forward on the same batches (issue 17): does decoding and writing overlap
the model? And with --precisions, `vitkit embed` on the same folder at each inference precision (issue 28).

    python benchmarks/embed_bench.py --images 512 --batch-size 64 --workers 2
    python benchmarks/embed_bench.py --images 128 --batch-size 16 --precisions fp32,bf16,int8

A folder of generated 256x256 JPEGs goes through `vitkit.embed(..., out=DIR)` end to end (decode, eval transform,
forward, pool, shards written). The bare forward runs the same model (fp32) on the same batches, decoded and
transformed beforehand, and only pools. Rounds alternate them all; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vitkit
from vitkit.data import DataConfig, eval_transform
from vitkit.data.datasets import open_image


def write_jpegs(root: Path, count: int, side: int = 256) -> list[Path]:
    """Smooth random pictures (low-frequency noise, upscaled), so JPEG decoding costs what a photo's does."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = root / f"{i:05d}.jpg"
        if not path.exists():
            small = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(small).resize((side, side), Image.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def bare(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            model.forward_head(model.forward_features(x), pre_logits=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path("/tmp/vitkit_embed_bench"))
    parser.add_argument("--precisions", default="fp32", help="comma-separated inference precisions for vitkit embed")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    paths = write_jpegs(args.root / "images", args.images)
    model = vitkit.create_model(args.model).eval()
    config = DataConfig.of(model.config)
    prepare = eval_transform(config)
    images = torch.stack([prepare(open_image(p, config.in_chans)) for p in paths])
    batches = list(images.split(args.batch_size))
    bare(model, batches[:1])  # warm-up
    ways = {precision: "vitkit embed" if precision == "fp32" else f"vitkit embed --precision {precision}"
            for precision in precisions}
    times: dict[str, list[float]] = {"bare forward": [], **{way: [] for way in ways.values()}}
    for _ in range(args.rounds):
        times["bare forward"].append(bare(model, batches))
        for precision, way in ways.items():
            out = Path(tempfile.mkdtemp(dir=args.root))
            start = time.perf_counter()
            vitkit.embed(model, args.root / "images", out=out, batch_size=args.batch_size, workers=args.workers,
                         precision=precision)
            times[way].append(time.perf_counter() - start)
            shutil.rmtree(out)
    rates = {name: args.images / statistics.median(t) for name, t in times.items()}
    print(f"{args.model}, {args.images} JPEGs 256x256 -> 224 px centre crop, batch {args.batch_size}, "
          f"{args.workers} loader workers, {torch.get_num_threads()} torch threads, medians of {args.rounds} "
          "rounds\n")
    print("| way | img/s | per-round seconds |\n|---|---:|---|")
    for name, t in times.items():
        print(f"| {name} | {rates[name]:.1f} | {', '.join(f'{s:.1f}' for s in t)} |")
    ratio = rates["vitkit embed"] / rates["bare forward"] if "vitkit embed" in rates else None
    if ratio is not None:
        print(f"\nvitkit embed / bare forward: **{ratio:.3f}** (target ≥ 0.9)")
    if args.json:
        args.json.write_text(json.dumps({"times": times, "img_per_s": rates, "ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
