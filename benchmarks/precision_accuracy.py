"""Each inference precision against fp32 on this machine: accuracy first, then speed.

    python benchmarks/precision_accuracy.py --run runs/digits --rounds 3

- The digits model (a `vitkit train` run with its defaults, `--run`): top-1 on its 360 validation images, how many
  of its predictions agree with fp32's, the largest logit change, and the cosine of its pooled features to fp32's.
- A tower on real photographs: ViT-B/16 at a trained model's weight magnitudes (`vitkit.bench.weights.realistic_`),
  on 32 crops of scikit-learn's two sample photographs at 224 px: the cosine of its embeddings to fp32's.
- Speed: img/s of each (the digits model over its validation set in batches of 64; ViT-B/16 on the 32 crops in
  batches of 16), medians of `--rounds`, the precisions taking turns; `vitkit.embed` on the crops too (a copy of
  the model made at the precision each call, as `vitkit embed` does).
- The int8 verdict the issue asks for: offered only where it beats bf16 on speed with at most 0.5 points of top-1
  lost on the digits model and cosine >= 0.99 on the photographs.

The CPU's flags come first: without a bf16 matrix engine (AMX, AVX512-BF16) bf16 runs emulated, slower than fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images
from torchvision.transforms import v2

import vitkit
from vitkit.bench.weights import realistic_
from vitkit.data import DataConfig, load_splits
from vitkit.runtime import INFERENCE_PRECISIONS, native_bf16

FLAGS = ("avx2", "avx512", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni")


def cpu_line() -> str:
    caps = torch.cpu.get_capabilities()
    flags = [flag for flag in FLAGS if caps.get(flag)]
    why = native_bf16(torch.device("cpu"))[1]
    return f"{caps.get('cpu_name', 'CPU')}: {', '.join(flags) or 'no vector flags reported'}; {why}"


def photos(mean: tuple[float, ...], std: tuple[float, ...], count: int = 32, seed: int = 0) -> torch.Tensor:
    """`count` crops (N, 3, 224, 224) of scikit-learn's sample photographs, normalised as the model expects."""
    torch.manual_seed(seed)
    crop = v2.Compose([v2.RandomResizedCrop(224, scale=(0.1, 1.0), antialias=True),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    pictures = [torch.from_numpy(image.copy()).permute(2, 0, 1) for image in load_sample_images().images]
    return torch.stack([crop(pictures[i % len(pictures)]) for i in range(count)])


def run(model: torch.nn.Module, images: torch.Tensor, name: str, batch: int, pre_logits: bool) -> torch.Tensor:
    """`model` (already at precision `name`) over `images` in batches, as fp32 rows."""
    chosen = INFERENCE_PRECISIONS[name]
    cpu = torch.device("cpu")
    with torch.inference_mode(), chosen.context(cpu):
        outs = [model.forward_head(model.forward_features(part.to(chosen.inputs)), pre_logits=pre_logits)
                for part in images.split(batch)]
    return torch.cat(outs).float()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(run_dir: Path, names: list[str], rounds: int) -> dict:
    cpu = torch.device("cpu")
    digits = vitkit.load_pretrained(run_dir).eval()
    val = load_splits("digits", DataConfig.of(digits.config)).val
    images = torch.stack([val[i][0] for i in range(len(val))])
    labels = torch.tensor([val[i][1] for i in range(len(val))])
    tower = realistic_(vitkit.create_model("vit_base_patch16_224", num_classes=0), seed=0)
    crops = photos(tower.config.mean, tower.config.std)
    ready = {name: (INFERENCE_PRECISIONS[name].prepare(digits, cpu, inplace=False),
                    INFERENCE_PRECISIONS[name].prepare(tower, cpu, inplace=False)) for name in names}
    results: dict[str, dict] = {}
    for name, (model, big) in ready.items():
        logits = run(model, images, name, 64, pre_logits=False)
        results[name] = {"logits": logits, "features": run(model, images, name, 64, pre_logits=True),
                         "photos": run(big, crops, name, 16, pre_logits=True),
                         "digits_s": [], "tower_s": [], "embed_s": []}
    for _ in range(rounds):  # the precisions take turns, so a change in the machine's load hits them all
        for name, (model, big) in ready.items():
            results[name]["digits_s"].append(timed(lambda m=model, n=name: run(m, images, n, 64, pre_logits=False)))
            results[name]["tower_s"].append(timed(lambda m=big, n=name: run(m, crops, n, 16, pre_logits=True)))
            results[name]["embed_s"].append(timed(lambda n=name: vitkit.embed(tower, crops, batch_size=16,
                                                                               precision=n)))
    reference = results["fp32"]
    rows = []
    for name, got in results.items():
        predictions = got["logits"].argmax(1)
        rows.append({
            "precision": name,
            "about": INFERENCE_PRECISIONS[name].about,
            "digits_top1": (predictions == labels).float().mean().item(),
            "agree_with_fp32": (predictions == reference["logits"].argmax(1)).float().mean().item(),
            "max_logit_change": (got["logits"] - reference["logits"]).abs().max().item(),
            "digits_cosine_min": F.cosine_similarity(got["features"], reference["features"]).min().item(),
            "photos_cosine_min": F.cosine_similarity(got["photos"], reference["photos"]).min().item(),
            "photos_cosine_mean": F.cosine_similarity(got["photos"], reference["photos"]).mean().item(),
            "digits_img_s": len(images) / statistics.median(got["digits_s"]),
            "tower_img_s": len(crops) / statistics.median(got["tower_s"]),
            "embed_img_s": len(crops) / statistics.median(got["embed_s"]),
        })
    return {"cpu": cpu_line(), "run": str(run_dir), "digits_images": len(images), "photo_crops": len(crops),
            "rounds": rounds, "rows": rows}


def verdict(report: dict) -> list[str]:
    """Whether int8 is worth offering, by the issue's rule, from the measured rows."""
    rows = {row["precision"]: row for row in report["rows"]}
    if "int8" not in rows or "bf16" not in rows:
        return []
    int8, bf16, fp32 = rows["int8"], rows["bf16"], rows["fp32"]
    faster = int8["tower_img_s"] > bf16["tower_img_s"]
    lost = 100 * (fp32["digits_top1"] - int8["digits_top1"])
    ok = faster and lost <= 0.5 and int8["photos_cosine_min"] >= 0.99
    return [
        f"int8 against bf16 here: {int8['tower_img_s']:.1f} vs {bf16['tower_img_s']:.1f} img/s on ViT-B/16 "
        f"({int8['tower_img_s'] / bf16['tower_img_s']:.2f}x; against fp32 "
        f"{int8['tower_img_s'] / fp32['tower_img_s']:.2f}x), "
        f"digits top-1 {lost:+.2f} points lost, photographs' cosine >= {int8['photos_cosine_min']:.4f}: "
        + ("offered as --precision int8." if ok else "not worth offering by the rule (faster than bf16, <= 0.5 points, "
                                                   "cosine >= 0.99)."),
    ]


def table(report: dict) -> str:
    lines = [
        f"CPU: {report['cpu']}",
        "",
        "| precision | digits top-1 | agrees with fp32 | max logit change | digits features cosine (min) "
        "| photographs cosine (min / mean) | digits img/s | ViT-B/16 img/s | `vitkit.embed` img/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['precision']} | {100 * row['digits_top1']:.2f}% | {100 * row['agree_with_fp32']:.2f}% "
            f"| {row['max_logit_change']:.2g} | {row['digits_cosine_min']:.5f} "
            f"| {row['photos_cosine_min']:.5f} / {row['photos_cosine_mean']:.5f} | {row['digits_img_s']:.0f} "
            f"| {row['tower_img_s']:.2f} | {row['embed_img_s']:.2f} |")
    lines += ["", *verdict(report)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="A digits run (`vitkit train --out DIR`).")
    parser.add_argument("--precisions", default="fp32,bf16,bf16-autocast,int8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    names = args.precisions.split(",")
    if names[0] != "fp32":
        parser.error("--precisions must start with fp32, the reference")
    report = measure(args.run, names, args.rounds)
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
