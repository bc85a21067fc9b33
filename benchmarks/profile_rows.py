"""How fast this machine multiplies a block's matrices as the number of token rows grows: the evidence for
what packing can and cannot win over running images one at a time (a per-image forward multiplies matrices
of that image's token count; a packed one of a whole chunk's).

    python benchmarks/profile_rows.py [--model vit_small_patch16_224]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import vitkit

ROWS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def rate(rows: int, weights: list[tuple[torch.Tensor, torch.Tensor]], seconds: float = 0.3) -> float:
    """GFLOP/s of one block's four matrix products (qkv, proj, fc1, fc2) on `rows` tokens, median of 5 runs."""
    x = {w.shape[1]: torch.randn(rows, w.shape[1]) for w, _ in weights}
    flops = sum(2 * rows * w.shape[0] * w.shape[1] for w, _ in weights)

    def block() -> None:
        for w, b in weights:
            F.linear(x[w.shape[1]], w, b)

    block()
    start = time.perf_counter()
    block()
    reps = max(1, int(seconds / max(time.perf_counter() - start, 1e-6)))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            block()
        times.append((time.perf_counter() - start) / reps)
    return flops / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    args = parser.parse_args()
    block = vitkit.create_model(args.model, depth=1).blocks[0]
    weights = [(m.weight.detach(), m.bias.detach()) for m in (block.attn.qkv, block.attn.proj, block.mlp.fc1,
                                                                block.mlp.fc2)]
    print(f"{args.model}: one block's matrix products, {torch.get_num_threads()} threads")
    print("| token rows | GFLOP/s |")
    print("|---:|---:|")
    with torch.inference_mode():
        for rows in ROWS:
            print(f"| {rows} | {rate(rows, weights):.0f} |")


if __name__ == "__main__":
    main()
