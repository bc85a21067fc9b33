"""vitkit against timm and onnxruntime at each inference precision, from the `vitkit bench` JSON files of the
precision suite.

    python benchmarks/precision_summary.py benchmarks/results/precision

One row per (model, precision): img/s of vitkit, timm and onnxruntime (fp32 and int8 only: its CPU provider has no
bf16 kernels), vitkit's ratio to each, the rate at which this machine multiplies the block's matrices in the
precision's compute dtype (measured in each candidate's process, after its steps), and each one's efficiency
against it. Then issue 28's targets for vitkit's best bf16 mode: >= 0.8 of the bf16 matrix rate,
and >= 1.5x timm's best bf16 mode (autocast or bf16 weights).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODELS = ("vit_small_patch16_224", "vit_base_patch16_224", "siglip_so400m_patch14_224")
MODES = ("fp32", "bf16-autocast", "bf16", "int8", "bf16_compiled")


def rows_of(path: Path) -> dict[str, dict]:
    report = json.loads(path.read_text())
    return {row["candidate"]: row for row in report["rows"] if row["status"] == "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    lines = ["| model | precision | vitkit img/s | timm img/s | vitkit / timm | onnxruntime img/s | "
             "vitkit / onnxruntime | matrix rate GFLOP/s | vitkit efficiency | timm efficiency |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    summary: dict[str, dict] = {}
    for model in MODELS:
        for mode in MODES:
            path = args.results / f"{model}_{mode}.json"
            if not path.is_file():
                continue
            rows = rows_of(path)
            ours, theirs, ort = rows.get("vitkit"), rows.get("timm"), rows.get("onnxruntime")
            if ours is None:
                continue
            label = "bf16, compiled (freezing)" if mode == "bf16_compiled" else mode
            summary.setdefault(model, {})[mode] = {"vitkit": ours["img_per_s"],
                                                   "timm": theirs["img_per_s"] if theirs else None,
                                                   "onnxruntime": ort["img_per_s"] if ort else None,
                                                   "rate": ours["ceiling_gflops_per_s"],
                                                   "efficiency": ours["efficiency"]}
            cells = [model, label, f"{ours['img_per_s']:.2f}"]
            for peer in (theirs, ort):
                cells += ([f"{peer['img_per_s']:.2f}", f"{ours['img_per_s'] / peer['img_per_s']:.2f}"] if peer
                          else ["-", "-"])
            cells += [f"{ours['ceiling_gflops_per_s']:,.0f}", f"{100 * ours['efficiency']:.0f}%",
                      f"{100 * theirs['efficiency']:.0f}%" if theirs else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    print()
    for model, modes in summary.items():
        bf16 = {m: v for m, v in modes.items() if m.startswith("bf16")}
        if not bf16:
            continue
        best_mode, best = max(bf16.items(), key=lambda item: item[1]["vitkit"])
        timm_best = max((v["timm"] for m, v in bf16.items() if m != "bf16_compiled" and v["timm"]), default=None)
        ratio = f"{best['vitkit'] / timm_best:.2f}x timm's best bf16 mode" if timm_best else "no timm bf16 row"
        print(f"- {model}: vitkit's best bf16 mode ({best_mode}) {best['vitkit']:.2f} img/s, "
              f"{100 * best['efficiency']:.0f}% of the bf16 matrix rate (target 80%), {ratio} (target 1.5x).")
    if any(v["efficiency"] > 1 for modes in summary.values() for v in modes.values()):
        print()
        print("An efficiency above 100% means the model multiplies faster than `torch.matmul` does in that dtype at "
              "the block's shapes: int8's rate is read against the fp32 one, and where bf16 has no matrix engine "
              "(emulated, converted in small blocks) SDPA's fused CPU kernel and oneDNN's linear layers convert to "
              "fp32 more cheaply than a bf16 `torch.matmul` does.")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
