"""SigLIP2 NaFlex on images of many shapes: vitkit's packed batch against transformers' padded batch
(`Siglip2VisionModel` with `pixel_attention_mask`) and timm's `NaFlexVit`, on the same weights.

    python benchmarks/naflex_bench.py --images 64 --min-side 64 --max-side 512 --budgets 256,1024 --depth 4

Every image gets SigLIP2's NaFlex size under the budget (aspect ratio kept). vitkit packs the images into sequences of
`--max-tokens` (default: 4 x the budget) and runs attention per image; transformers and timm pad every image to the
budget in batches of `--batch-size`. All three run the pooled (MAP) features in `torch.inference_mode()`: median of
`--steps` passes over the whole set after a warm-up, in turn, `--rounds` times; tensor MB is the most memory tensors
held during one pass (`vitkit.bench.live_tensors`). The first pass checks that the three agree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from transformers import Siglip2VisionConfig, Siglip2VisionModel

import vitkit
from vitkit.bench.live_tensors import LiveTensorBytes
from vitkit.data import DataConfig, eval_transform


def naflex_images(count: int, low: int, high: int, budget: int, data: DataConfig, seed: int) -> list[torch.Tensor]:
    """`count` random uint8 images with sides in [low, high], each resized to its NaFlex size and normalised."""
    gen = torch.Generator().manual_seed(seed)
    transform = eval_transform(DataConfig(**{**data.__dict__, "max_patches": budget}), keep_aspect=True)
    sides = torch.randint(low, high + 1, (count, 2), generator=gen).tolist()
    return [transform(torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8)) for h, w in sides]


def padded(images: list[torch.Tensor], budget: int, patch: int) -> dict[str, torch.Tensor]:
    """Images as transformers' and timm's NaFlex inputs: (B, budget, p*p*C) patches in (row, column, channel) order,
    a validity mask, each patch's (row, column), and each image's grid."""
    values = torch.zeros(len(images), budget, 3 * patch * patch)
    valid = torch.zeros(len(images), budget, dtype=torch.bool)
    coords = torch.zeros(len(images), budget, 2, dtype=torch.long)
    shapes = []
    for i, image in enumerate(images):
        c, h, w = image.shape
        gh, gw = h // patch, w // patch
        values[i, : gh * gw] = image.reshape(c, gh, patch, gw, patch).permute(1, 3, 2, 4, 0).reshape(gh * gw, -1)
        valid[i, : gh * gw] = True
        coords[i, : gh * gw] = torch.stack(torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij"), -1
                                           ).reshape(-1, 2)
        shapes.append((gh, gw))
    return {"values": values, "valid": valid, "coords": coords, "shapes": torch.tensor(shapes)}


def build(depth: int, seed: int) -> tuple[vitkit.VisionTransformer, Siglip2VisionModel, torch.nn.Module]:
    """siglip2_base_patch16_naflex at `depth` blocks in all three libraries, on one set of random weights."""
    torch.manual_seed(seed)
    hf = Siglip2VisionModel(Siglip2VisionConfig(num_hidden_layers=depth, num_patches=256, patch_size=16)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        mine = vitkit.load_pretrained(tmp)
    theirs = timm.create_model("naflexvit_base_patch16_siglip", depth=depth).eval()
    sd = mine.state_dict()
    weight = sd.pop("patch_embed.proj.weight")  # (D, C, p, p) -> timm's Linear on (p, p, C) patches
    sd["embeds.proj.weight"] = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
    sd["embeds.proj.bias"] = sd.pop("patch_embed.proj.bias")
    table = sd.pop("pos_embed")
    sd["embeds.pos_embed"] = table.reshape(1, 16, 16, table.shape[-1])
    theirs.load_state_dict(sd)
    return mine, hf, theirs


def ways(mine: vitkit.VisionTransformer, hf: Siglip2VisionModel, theirs: torch.nn.Module, images: list[torch.Tensor],
         budget: int, max_tokens: int, batch_size: int) -> dict[str, Callable[[], torch.Tensor]]:
    """One pass over all images per candidate, each returning the pooled features (N, D) in image order."""
    inputs = padded(images, budget, 16)  # each library's input layout is made once, outside the timed passes
    batch = mine.pack(images, max_tokens=max_tokens)
    chunks = [slice(i, i + batch_size) for i in range(0, len(images), batch_size)]

    def vitkit_packed() -> torch.Tensor:
        return mine.forward_packed(batch, pre_logits=True)

    def transformers_padded() -> torch.Tensor:
        return torch.cat([hf(pixel_values=inputs["values"][c], pixel_attention_mask=inputs["valid"][c].long(),
                             spatial_shapes=inputs["shapes"][c]).pooler_output for c in chunks])

    def timm_padded() -> torch.Tensor:
        return torch.cat([theirs({"patches": inputs["values"][c], "patch_coord": inputs["coords"][c],
                                  "patch_valid": inputs["valid"][c]}) for c in chunks])

    return {"vitkit (packed)": vitkit_packed, "transformers (padded)": transformers_padded,
            "timm NaFlexVit (padded)": timm_padded}


def measure(args: argparse.Namespace) -> dict[str, object]:
    mine, hf, theirs = build(args.depth, args.seed)
    data = DataConfig.of(mine.config)
    results = {}
    for budget in args.budgets:
        images = naflex_images(args.images, args.min_side, args.max_side, budget, data, args.seed)
        real = sum(i.shape[1] * i.shape[2] // 256 for i in images)
        candidates = ways(mine, hf, theirs, images, budget, args.max_tokens or 4 * budget, args.batch_size)
        times: dict[str, list[float]] = {name: [] for name in candidates}
        memory, agree = {}, {}
        with torch.inference_mode():
            want = candidates["vitkit (packed)"]()
            for name, run in candidates.items():
                with LiveTensorBytes() as counter:
                    out = run()
                memory[name] = counter.peak / 2**20
                agree[name] = (out - want).abs().max().item()
            for _ in range(args.rounds):
                for name, run in candidates.items():
                    run()  # warm-up
                    for _ in range(args.steps):
                        start = time.perf_counter()
                        run()
                        times[name].append(time.perf_counter() - start)
        rows = {name: {"img_s": args.images / statistics.median(t), "ms": 1e3 * statistics.median(t),
                       "tensor_mb": memory[name], "max_diff": agree[name]} for name, t in times.items()}
        for row in rows.values():
            row["vs_transformers"] = row["img_s"] / rows["transformers (padded)"]["img_s"]
            row["vs_timm"] = row["img_s"] / rows["timm NaFlexVit (padded)"]["img_s"]
        results[str(budget)] = {"real_patches": real, "padded_slots": args.images * budget, "rows": rows}
    return {"images": args.images, "sides": [args.min_side, args.max_side], "depth": args.depth,
            "threads": torch.get_num_threads(), "budgets": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--min-side", type=int, default=64)
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--budgets", type=lambda s: [int(v) for v in s.split(",")], default=[256, 1024])
    parser.add_argument("--depth", type=int, default=4, help="blocks of the ViT-B tower (12 is the real one)")
    parser.add_argument("--batch-size", type=int, default=16, help="padded images per forward")
    parser.add_argument("--max-tokens", type=int, default=None, help="packed sequence length (default: 4 x budget)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args)
    print(f"siglip2_base_patch16_naflex at {args.depth} blocks, {args.images} random images of sides "
          f"{args.min_side}-{args.max_side} px at their NaFlex sizes, {result['threads']} threads, inference\n")
    print("| budget | candidate | img/s | ms / pass | tensor MB | x transformers | x timm | max |diff| |")
    print("|---|---|---|---|---|---|---|---|")
    for budget, part in result["budgets"].items():
        for name, row in part["rows"].items():
            print(f"| {budget} | {name} | {row['img_s']:.1f} | {row['ms']:.0f} | {row['tensor_mb']:.0f} | "
                  f"{row['vs_transformers']:.2f} | {row['vs_timm']:.2f} | {row['max_diff']:.1e} |")
    print()
    for budget, part in result["budgets"].items():
        print(f"budget {budget}: {part['real_patches']} real patches, {part['padded_slots']} padded slots "
              f"({part['padded_slots'] / part['real_patches']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
