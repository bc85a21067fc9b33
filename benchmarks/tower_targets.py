"""Print the VLM-tower target as a markdown table, from the JSON of `run_all.sh tower` (`vitkit bench tower`).

    python benchmarks/tower_targets.py benchmarks/results/tower/tower.json

vitkit's packed tower at >= 1.0x the img/s of transformers' tower on the same images and weights (CPU, fp32), with
both ways' patch tokens/s and the parity of their merged tokens.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GOAL = 1.0


def main() -> None:
    report = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/tower/tower.json").read_text())
    rows = {row["way"]: row for row in report["rows"]}
    mine, theirs = rows["vitkit (packed)"], rows["transformers"]
    met = mine["ratio"] >= GOAL
    print("### Target (CPU, fp32, medians of the same run)\n")
    print("| img/s vitkit / transformers | patch tokens/s vitkit / transformers | × transformers (≥ 1.0) | "
          "max abs diff of merged tokens | met |")
    print("|---|---|---:|---:|---|")
    print(f"| {mine['img_per_s']:.2f} / {theirs['img_per_s']:.2f} | {mine['tokens_per_s']:,.0f} / "
          f"{theirs['tokens_per_s']:,.0f} | {mine['ratio']:.2f} | {report['max_abs_diff']:.1e} | "
          f"{'yes' if met else 'no'} |")
    if not met:
        print(f"\nMissed: vitkit runs at {mine['ratio']:.2f}x transformers' img/s, below {GOAL}; vitkit: "
              f"{mine['notes']}.")


if __name__ == "__main__":
    main()
