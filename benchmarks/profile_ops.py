"""Where inference time goes: the PyTorch profiler's operator table for vitkit and a peer on the same batch.

    python benchmarks/profile_ops.py simple_vit_small_patch16_224 vit-pytorch --batch-size 8
    python benchmarks/profile_ops.py vit_small_patch16_224 timm --batch-size 16
    python benchmarks/profile_ops.py vit_base_patch16_224 timm --batch-size 16 --precision bf16

Prints a markdown table: each aten operator's share of self CPU time, per library, and its total milliseconds
(median of the profiled steps). `--precision` runs both at an inference precision (vitkit.runtime.INFERENCE_PRECISIONS:
the weights cast or quantized, the batch cast, autocast around the steps). Used by BENCHMARKS.md to explain the
targets a kernel choice cannot reach.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from vitkit.bench.candidates import PEERS, build_vitkit
from vitkit.bench.runner import bench_config
from vitkit.bench.spec import CandidateSpec
from vitkit.runtime import INFERENCE_PRECISIONS

TORCH_PEERS = [name for name in PEERS if name != "onnxruntime"]  # the profiler sees torch's operators only


def op_times(model: torch.nn.Module, images: torch.Tensor, steps: int) -> dict[str, float]:
    """Median self-CPU milliseconds per aten operator over `steps` profiled inference steps."""
    per_step: dict[str, list[float]] = defaultdict(list)
    with torch.inference_mode():
        model(images)  # warm-up
        for _ in range(steps):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(images)
            for event in prof.key_averages():
                if event.key.startswith("aten::"):
                    per_step[event.key].append(event.self_cpu_time_total / 1e3)
    return {op: statistics.median(times + [0.0] * (steps - len(times))) for op, times in per_step.items()}


def wall_and_faults(model: torch.nn.Module, images: torch.Tensor, steps: int) -> tuple[float, float]:
    """Median wall milliseconds and minor page faults per inference step, without the profiler."""
    times, faults = [], []
    with torch.inference_mode():
        model(images)  # warm-up
        for _ in range(steps):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            model(images)
            times.append((time.perf_counter() - start) * 1e3)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(times), statistics.median(faults)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("peer", choices=sorted(TORCH_PEERS))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--precision", choices=sorted(INFERENCE_PRECISIONS), default="fp32")
    parser.add_argument("--json", help="Also write the tables (ms per operator, wall ms, page faults) as JSON.")
    args = parser.parse_args()
    precision = INFERENCE_PRECISIONS[args.precision]

    config = bench_config(args.model)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    ours = precision.prepare(build_vitkit(config, cpu, "auto", 0).model.eval(), cpu)
    theirs = precision.prepare(PEERS[args.peer].build(config, cpu, CandidateSpec(args.peer, {})).model.eval(), cpu)
    images = torch.randn(args.batch_size, config.in_chans, *config.img_size, generator=torch.Generator().manual_seed(0))
    images = images.to(precision.inputs)
    models = {"vitkit": ours, args.peer: theirs}
    with precision.context(cpu):
        tables = {name: op_times(model, images, args.steps) for name, model in models.items()}
        walls = {name: wall_and_faults(model, images, args.steps) for name, model in models.items()}
    totals = {name: sum(times.values()) for name, times in tables.items()}
    ops = sorted(set().union(*tables.values()), key=lambda op: -max(t.get(op, 0.0) for t in tables.values()))
    print(f"{args.model}, inference, {args.precision}, batch {args.batch_size}, {torch.get_num_threads()} threads: "
          f"self CPU time per operator (median of {args.steps} profiled steps)\n")
    print("| operator | " + " | ".join(f"{name} ms | {name} %" for name in tables) + " |")
    print("|---|" + "---|---|" * len(tables))
    for op in ops[: args.top]:
        cells = [f"{t.get(op, 0.0):,.1f} | {100 * t.get(op, 0.0) / totals[name]:.1f}" for name, t in tables.items()]
        print(f"| `{op}` | " + " | ".join(cells) + " |")
    print("| **all operators** | " + " | ".join(f"**{totals[name]:,.1f}** | 100" for name in tables) + " |")
    print("| wall time per step, no profiler | " + " | ".join(f"{walls[name][0]:,.1f} | " for name in tables) + " |")
    print("| minor page faults per step | " + " | ".join(f"{walls[name][1]:,.0f} | " for name in tables) + " |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"model": args.model, "precision": args.precision, "batch_size": args.batch_size,
                       "ms_per_operator": tables, "wall_ms_and_faults": walls}, out, indent=2)


if __name__ == "__main__":
    main()
