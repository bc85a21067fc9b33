"""Print the packing targets of issue 15 as a markdown table, from the JSON results of `run_all.sh packing`.

    python benchmarks/packing_targets.py benchmarks/results/packing

Per case and packed `max_tokens`: inference real tokens/s >= 1.2x one-at-a-time and >= 3x padded-to-largest;
training step >= 1.2x one-at-a-time; peak tensor memory <= padded-to-largest.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from targets import print_reasons

from vitkit.bench.packing_bench import PackingBenchSettings, random_images

GOALS = {"infer": (("vs_one", 1.2, "× one at a time"), ("vs_padded", 3.0, "× padded")),
         "train": (("vs_one", 1.2, "× one at a time"),)}
MEMORY = ("mem_vs_padded", 1.0, "memory × padded")


def _median_tokens(settings: dict) -> int:
    """The median image's token count in the benchmark's image set (patch 16, one class token)."""
    known = {k: v for k, v in settings.items() if k in PackingBenchSettings.__dataclass_fields__}
    images = random_images(PackingBenchSettings(**{**known, "max_tokens": tuple(known["max_tokens"])}), 3)
    return int(statistics.median(-(-x.shape[1] // 16) * -(-x.shape[2] // 16) + 1 for x in images))


def _reason(case: str, settings: dict, row: dict, padded: dict, key: str) -> str:
    label = f"{case}, packed {row['max_tokens']}"
    if key == "vs_one":
        return (f"{label}: {row['vs_one']:.2f}x one at a time. A forward is mostly its blocks' matrix products, "
                f"and this machine multiplies a block's matrices at about the same rate from ~256 token rows up "
                f"(table 'GEMM rate by token rows' below); this set's median image has {_median_tokens(settings)} "
                f"tokens, so one image at a time already runs near that rate, and packing can win only the small "
                f"images' share and the per-call overhead, while it runs {row['padding_pct']:.0f}% padding slots of "
                f"its own ({row['tokens_processed']:,} slots for {row['real_tokens']:,} real tokens).")
    if key == "vs_padded":
        return (f"{label}: {row['vs_padded']:.2f}x padded. Padded runs {padded['tokens_processed']:,} slots for "
                f"{row['real_tokens']:,} real tokens, so dropping every padding slot at padded's speed per token "
                f"gains {padded['tokens_processed'] / row['real_tokens']:.2f}x on the ops that scale with tokens, "
                "and more only on attention's share of the time (profile 'Where the time and memory go' below "
                "gives the bound with attention counted).")
    return (f"{label}: {row['mem_vs_padded']:.2f}x padded's tensor memory ({row['tensor_mem_mb']:.0f} MB vs "
            f"{row['tensor_mem_mb'] / row['mem_vs_padded']:.0f} MB); the tensors alive at each peak are in the "
            "profile below.")


def main() -> None:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/packing")
    print("### Targets (issue 15, CPU, fp32, medians of the same run)\n")
    print("| case | packed max_tokens | × one at a time | × padded | memory × padded | met |")
    print("|---|---:|---:|---:|---:|---|")
    reasons = []
    for path in sorted(directory.glob("*.json")):
        report = json.loads(path.read_text())
        settings, rows = report["settings"], report["rows"]
        case = (f"{settings['images']} images {settings['min_side']}-{settings['max_side']} px, "
                f"{settings['mode']}")
        padded = rows[1]
        for row in rows[2:]:
            if row["status"] != "ok":
                print(f"| {case} | {row['max_tokens']} | – | – | – | n/a: {row['reason']} |")
                continue
            goals = (*GOALS[settings["mode"]], MEMORY)
            missed = [key for key, goal, _ in goals
                      if (row[key] < goal if key != MEMORY[0] else row[key] > goal)]
            cells = [f"{row['vs_one']:.2f}", f"{row['vs_padded']:.2f}", f"{row['mem_vs_padded']:.2f}"]
            verdict = "yes" if not missed else "**no**: " + ", ".join(
                label for key, _, label in goals if key in missed)
            print(f"| {case} | {row['max_tokens']} | {' | '.join(cells)} | {verdict} |")
            reasons += [_reason(case, settings, row, padded, key) for key in missed]
    print()
    print("Goals: inference ≥ 1.20× one at a time and ≥ 3.00× padded; training ≥ 1.20× one at a time; tensor "
          "memory ≤ 1.00× padded. n/a: no packing with that max_tokens holds the largest image.\n")
    print_reasons(reasons)


if __name__ == "__main__":
    main()
