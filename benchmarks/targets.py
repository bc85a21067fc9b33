"""Print the CPU targets of issue 5 as a markdown table, from the JSON results of `run_all.sh cpu`.

    python benchmarks/targets.py benchmarks/results/cpu
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path


def _rows(directory: Path, name: str) -> dict[str, dict]:
    path = directory / f"{name}.json"
    if not path.is_file():
        return {}
    return {row["candidate"]: row for row in json.loads(path.read_text())["rows"] if row["status"] == "ok"}


def _speed_ratio(directory: Path, name: str, peer: str) -> float | None:
    rows = _rows(directory, name)
    if "vitkit" not in rows or peer not in rows:
        return None
    return rows["vitkit"]["img_per_s"] / rows[peer]["img_per_s"]


def _efficiency(directory: Path, name: str) -> float | None:
    return _rows(directory, name).get("vitkit", {}).get("efficiency")


def _memory_ratio(directory: Path) -> float | None:
    path = directory / "memory.json"
    if not path.is_file():
        return None
    rows = [row for row in json.loads(path.read_text())["rows"] if row["status"] == "ok"]
    if not rows or rows[0]["recomputed"] != 0 or rows[-1]["recomputed"] != 12:
        return None
    return rows[-1]["mem_vs_none"]


def _speed_reason(directory: Path, name: str, peer: str, goal: float) -> str:
    """Why a speed ratio fell short, from the two rows: the spread, or the matmul efficiency it would need."""
    rows = _rows(directory, name)
    ours, theirs = rows["vitkit"], rows[peer]
    ratio = ours["img_per_s"] / theirs["img_per_s"]
    spread = max(ours["spread_pct"], theirs["spread_pct"])
    if goal == 1.0 and 100 * (1 - ratio) <= spread:
        return (f"{name}: vitkit and {peer} run the same matrix products, most of the time in the profiles above; "
                f"the {100 * (1 - ratio):.1f}% gap is within the rows' spread (IQR up to {spread:.0f}%).")
    need = goal * theirs["efficiency"]
    return (f"{name}: {goal:.2f}x {peer} would need vitkit at {100 * need:.0f}% of this machine's same-shape "
            f"matmul rate, as {peer} runs at {100 * theirs['efficiency']:.0f}%; vitkit runs at "
            f"{100 * ours['efficiency']:.0f}%. Both run the same matrix products, most of the time in the profile "
            "above; the rest of vitkit's is attention on SDPA's fused CPU kernel (the fastest here: see the attention "
            f"table), layer norms and GELU. {peer}'s own extra time is its unfused attention (bmm, softmax, scaling "
            f"in the profile) and, in its own process, page faults on buffers it allocates each step: hence its "
            f"spread (IQR {theirs['spread_pct']:.0f}%), and the smaller gap in the profile, run in one process "
            "after vitkit had grown the heap.")


def _efficiency_reason(directory: Path, name: str) -> str:
    """Why vitkit's share of the matmul rate fell short: what else its time goes to, and timm beside it."""
    rows = _rows(directory, name)
    timm = f" (timm: {100 * rows['timm']['efficiency']:.0f}%)" if "timm" in rows else ""
    return (f"{name}: vitkit runs at {100 * rows['vitkit']['efficiency']:.0f}% of the same-shape matmul rate{timm}. "
            "The rest of its time is the work a ViT does besides its blocks' matrix products: the fused attention "
            "kernel, layer norms, GELU, residual adds, and addmm's copy of each bias into a fresh output buffer, "
            "where that buffer's page faults land (`aten::copy_` in the profiles above).")


Target = tuple[str, float | None, float, bool, Callable[[], str] | None]


def targets(directory: Path) -> list[Target]:
    """(what, measured, goal, higher is better, why it fell short) for each target."""
    def speed(what: str, name: str, peer: str, goal: float) -> Target:
        return (what, _speed_ratio(directory, name, peer), goal, True,
                functools.partial(_speed_reason, directory, name, peer, goal))

    found = [
        speed(f"vitkit / timm, {model}, {mode} batch {batch}", f"{model}_{mode}", "timm", 1.0)
        for model in ("vit_small_patch16_224", "vit_base_patch16_224") for mode, batch in (("infer", 16), ("train", 8))
    ]
    simple = "simple_vit_small_patch16_224"
    found += [
        speed("vitkit SimpleViT / vit-pytorch SimpleViT, infer", f"{simple}_infer", "vit-pytorch", 1.5),
        speed("vitkit SimpleViT / vit-pytorch SimpleViT, train", f"{simple}_train", "vit-pytorch", 1.0),
        speed("vitkit SimpleViT / simple_flash_attn_vit, infer", f"{simple}_infer", "vit-pytorch-flash", 1.0),
        speed("vitkit SimpleViT / simple_flash_attn_vit, train", f"{simple}_train", "vit-pytorch-flash", 1.0),
        ("vitkit GFLOP/s / same-shape matmul rate, vit_base_patch16_224 infer",
         _efficiency(directory, "vit_base_patch16_224_infer"), 0.9, True,
         functools.partial(_efficiency_reason, directory, "vit_base_patch16_224_infer")),
        ("peak training memory, all 12 blocks recomputed / none, vit_base_patch16_224 batch 32",
         _memory_ratio(directory), 0.5, False, None),
    ]
    return found


def main() -> None:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/cpu")
    print("### Targets (issue 5, CPU, fp32, medians of the same run)\n")
    print("| target | goal | measured | met |")
    print("|---|---|---|---|")
    reasons = []
    for what, measured, goal, higher, why in targets(directory):
        sign = "≥" if higher else "≤"
        if measured is None:
            print(f"| {what} | {sign} {goal:.2f} | not measured | |")
            continue
        met = measured >= goal if higher else measured <= goal
        print(f"| {what} | {sign} {goal:.2f} | {measured:.2f} | {'yes' if met else '**no**'} |")
        if not met and why is not None:
            reasons.append(why())
    print()
    print_reasons(reasons)


def print_reasons(reasons: list[str]) -> None:
    """The closing list of a targets table: each target not met, and why."""
    if reasons:
        print("Targets not met, and why:\n")
        print("\n".join(f"- {reason}" for reason in reasons))
        print()


if __name__ == "__main__":
    main()
