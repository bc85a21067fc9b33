"""Print the NaFlex targets of issue 25 as a markdown table, from the JSON of `run_all.sh naflex`.

    python benchmarks/naflex_targets.py benchmarks/results/naflex/naflex_bench.json

Per budget: vitkit packed img/s >= 1.5x transformers' padded batch and >= 1.0x timm's NaFlexVit; each miss with its
reason, quantified from the same run.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

GOALS = (("vs_transformers", 1.5, "× transformers"), ("vs_timm", 1.0, "× timm"))


def model_gflop(depth: int, real: int, budget: int, dim: int = 768, hidden: int = 3072) -> float:
    """The tower's work on the real patches (a multiply-add is 2 FLOPs): patch embedding, per block qkv + projection +
    MLP, and attention per image (each image's n^2 taken as n x budget: NaFlex sizes nearly fill the budget)."""
    per_block = 2 * real * (4 * dim * dim + 2 * dim * hidden) + 4 * real * budget * dim
    return (2 * real * dim * 3 * 16 * 16 + depth * per_block) / 1e9


def matmul_rate(rows: int = 4096, dim: int = 768, hidden: int = 3072) -> float:
    """GFLOP/s of this machine on the MLP's matrix product shape, now (median of 5)."""
    a, b = torch.randn(rows, dim), torch.randn(dim, hidden)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * rows * dim * hidden / statistics.median(times[1:]) / 1e9


def main() -> None:
    report = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else
                             "benchmarks/results/naflex/naflex_bench.json").read_text())
    print("### Targets (issue 25, CPU, fp32, medians of the same run)\n")
    print("| budget | × transformers (≥ 1.5) | × timm (≥ 1.0) | GFLOP/s vitkit / transformers / timm | "
          "tensor MB vitkit / transformers / timm | met |")
    print("|---|---:|---:|---|---|---|")
    reasons = []
    rate = matmul_rate()
    for budget, part in report["budgets"].items():
        rows = part["rows"]
        mine = rows["vitkit (packed)"]
        met = [mine[key] >= goal for key, goal, _ in GOALS]
        work = model_gflop(report["depth"], part["real_patches"], int(budget))
        speed = " / ".join(f"{work / (rows[name]['ms'] / 1e3):.0f}" for name in rows)
        memory = " / ".join(f"{rows[name]['tensor_mb']:.0f}" for name in rows)
        print(f"| {budget} | {mine['vs_transformers']:.2f} | {mine['vs_timm']:.2f} | {speed} | {memory} | "
              f"{'yes' if all(met) else 'no'} |")
        bound = part["padded_slots"] / part["real_patches"]
        for (key, goal, label), ok in zip(GOALS, met, strict=True):
            if not ok:
                reasons.append(
                    f"- budget {budget}: {mine[key]:.2f}{label}, below {goal}. NaFlex sizing scales every image to "
                    f"nearly fill the budget, so the padded batch holds {part['padded_slots']:,} slots for "
                    f"{part['real_patches']:,} real patches: skipping every padding slot at the peer's speed per "
                    f"token gains at most {bound:.2f}x. Beyond that only per-token speed is left: all three run the "
                    f"same matrix products, at the GFLOP/s of model work in the table against {rate:.0f} GFLOP/s "
                    "for this machine's MLP-shaped matrix product (measured when this table was printed), so 1.5x "
                    "would need the peer at two thirds of vitkit's rate; the target assumed padding to the largest "
                    "image, which NaFlex sizing does not do."
                )
    if reasons:
        print("\nWhere a target is missed:\n")
        print("\n".join(reasons))


if __name__ == "__main__":
    main()
