"""RoPE's share of a transformer block's time: the rotation of q and k against the whole block, inference and
training (forward + backward), on a registered RoPE tower at its native size.

    python benchmarks/rope_share.py --model vit_small_patch16_dinov3 --batch-size 16 --steps 20

The block runs on its real input (the embedded images) with the model's own rotation; the rotation is then timed
alone on the same q and k (the block's own views of its qkv projection). Medians of `--steps` timed runs after
warm-up; the share is rotation / block.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import vitkit


def median_ms(fn: Callable[[], object], steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(model_name: str, batch_size: int, steps: int) -> dict[str, object]:
    torch.manual_seed(0)
    model = vitkit.create_model(model_name)
    height, width = model.config.img_size
    images = torch.randn(batch_size, model.config.in_chans, height, width)
    grid = model.patch_embed.grid_for(height, width)
    block, rotation = model.blocks[0], model.rope_for(*grid)[0]
    with torch.no_grad():
        tokens = model.embed(images)
        q, k, _ = block.attn._qkv(block.norm1(tokens), None)  # the block's own q and k, before rotation
    rows = {}
    for mode in ("infer", "train"):
        model.train(mode == "train")
        x = tokens.detach().requires_grad_(mode == "train")
        qg, kg = (t.detach().requires_grad_(mode == "train") for t in (q, k))

        def run_block(x: torch.Tensor = x) -> None:
            out = block(x, None, model.attention_choice, rotation)
            if out.requires_grad:
                out.backward(torch.ones_like(out))

        def run_rotation(qg: torch.Tensor = qg, kg: torch.Tensor = kg) -> None:
            q_out, k_out = rotation.rotate(qg), rotation.rotate(kg)
            if q_out.requires_grad:
                torch.autograd.backward((q_out, k_out), (torch.ones_like(q_out), torch.ones_like(k_out)))

        with torch.set_grad_enabled(mode == "train"):
            block_ms, rope_ms = median_ms(run_block, steps), median_ms(run_rotation, steps)
        rows[mode] = {"block_ms": block_ms, "rope_ms": rope_ms, "share": rope_ms / block_ms}
    return {"model": model_name, "batch_size": batch_size, "tokens": tokens.shape[1], "q_shape": list(q.shape),
            "threads": torch.get_num_threads(), "modes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_small_patch16_dinov3")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    args = parser.parse_args()
    result = measure(args.model, args.batch_size, args.steps)
    print(f"{result['model']}, batch {result['batch_size']}, {result['tokens']} tokens, q and k "
          f"{tuple(result['q_shape'])}, {result['threads']} threads\n")
    print("| mode | block ms | rotation of q and k ms | share of the block |")
    print("|---|---|---|---|")
    for mode, row in result["modes"].items():
        print(f"| {mode} | {row['block_ms']:.2f} | {row['rope_ms']:.2f} | {100 * row['share']:.1f}% |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
