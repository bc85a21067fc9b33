"""Where packed and padded batches spend their time and their memory: the evidence behind the packing targets
that miss (issue 15).

    python benchmarks/profile_packing.py --images 64 --min-side 64 --max-side 512 --max-tokens 4096 --mode infer

Builds the same images, model and ways as `vitkit bench packing`, then prints two markdown tables for padded
and packed: self CPU time per operator class (PyTorch profiler, median of the profiled steps), with the most packing
could gain over padded at padded's per-token speed, and the tensors alive at the step's memory peak, grouped by the
operator that made them and their last dimension.
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from vitkit.bench.live_tensors import LiveTensorBytes
from vitkit.bench.packing_bench import PackingBenchSettings, Way, build_ways, random_images, step_fn
from vitkit.bench.runner import bench_config
from vitkit.models import build_model

MIB = 2**20
# operator class -> substrings of aten operator names; the first class that matches wins
CLASSES = {
    "matrix products": ("addmm", "::mm", "bmm", "baddbmm", "matmul", "linear_backward", "convolution"),
    "attention": ("scaled_dot_product", "flash_attention", "efficient_attention", "softmax"),
    "norm, GELU, add": ("layer_norm", "gelu", "::add", "::mul", "::div", "::sum", "::mean", "::pow"),
    "copies, indexing, padding": ("copy", "index", "cat", "clone", "contiguous", "pad", "zero", "fill", "empty",
                                  "select", "slice", "narrow", "gather", "scatter", "isin", "nonzero", "stack",
                                  "repeat", "expand", "as_strided", "unbind", "split", "transpose", "permute",
                                  "view", "reshape", "t", "masked"),
}


def op_class(name: str) -> str:
    return next((label for label, keys in CLASSES.items() if any(key in name for key in keys)), "other")


def time_by_class(step: Callable[[], None], steps: int) -> dict[str, float]:
    """Median self-CPU milliseconds per operator class over `steps` profiled steps (after one warm-up)."""
    step()
    per_step: dict[str, list[float]] = defaultdict(list)
    for _ in range(steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        totals: Counter[str] = Counter()
        for event in prof.key_averages():
            if event.key.startswith("aten::"):
                totals[op_class(event.key)] += event.self_cpu_time_total / 1e3
        for label in (*CLASSES, "other"):
            per_step[label].append(totals[label])
    return {label: statistics.median(times) for label, times in per_step.items()}


def best_vs_padded(model: torch.nn.Module, images: list[torch.Tensor], padded: Way, seconds: dict[str, float]) -> float:
    """The most packing can gain over padded if it ran at padded's per-token speed with no overhead: the padding
    share of the linear-in-tokens time and the padding share of attention's quadratic time both vanish."""
    (ph, pw), prefix = model.patch_embed.patch_size, model.num_prefix_tokens
    lengths = [-(-x.shape[1] // ph) * -(-x.shape[2] // pw) + prefix for x in images]
    padded_len = padded.tokens_processed // len(images)
    attention = seconds["attention"]
    linear = sum(seconds.values()) - attention
    packed = linear * sum(lengths) / padded.tokens_processed + attention * sum(n * n for n in lengths) / (
        len(images) * padded_len**2)
    return (linear + attention) / packed


class PeakSnapshot(LiveTensorBytes):
    """`LiveTensorBytes` that also remembers which tensors were alive at the peak: (operator, shape) -> bytes."""

    def __init__(self) -> None:
        super().__init__()
        self._labels: dict[int, str] = {}
        self._func = ""
        self.at_peak: Counter[str] = Counter()

    def _track(self, tensor: torch.Tensor) -> None:
        key, peak = tensor.untyped_storage().data_ptr(), self.peak
        new = key not in self._sizes
        super()._track(tensor)
        if new and key in self._sizes:
            self._labels[key] = f"`{self._func}` (…, {tensor.shape[-1] if tensor.dim() else 1})"
        if self.peak > peak:
            self.at_peak = Counter()
            for k, size in self._sizes.items():
                self.at_peak[self._labels.get(k, "?")] += size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._func = str(getattr(func, "__name__", func)).split(".")[0]
        return super().__torch_dispatch__(func, types, args, kwargs)


def memory_at_peak(step: Callable[[], None]) -> tuple[float, Counter[str]]:
    counter = PeakSnapshot()
    with counter:
        step()
    return counter.peak / MIB, counter.at_peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--min-side", type=int, default=112)
    parser.add_argument("--max-side", type=int, default=448)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--mode", choices=("infer", "train"), default="infer")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=6)
    args = parser.parse_args()
    settings = PackingBenchSettings(model=args.model, images=args.images, min_side=args.min_side,
                                    max_side=args.max_side, max_tokens=(args.max_tokens,),
                                    batch_size=args.batch_size, mode=args.mode, device="cpu")
    config = bench_config(settings.model).replace(dynamic_img_size=True, dynamic_img_pad=True, num_classes=1000)
    torch.manual_seed(settings.seed)
    model = build_model(config).train(settings.mode == "train")
    cpu = torch.device("cpu")
    images = random_images(settings, config.in_chans)
    ways: list[Way] = build_ways(settings, model, images, cpu)[1:]
    if ways[1].skip:
        raise SystemExit(f"packed {args.max_tokens}: {ways[1].skip}")
    names = ["padded", f"packed {args.max_tokens}"]
    steps = [step_fn(model, way.batches, settings.mode, cpu, "fp32") for way in ways]
    times = [time_by_class(step, args.steps) for step in steps]
    memory = [memory_at_peak(step) for step in steps]

    print(f"{args.model}, {args.mode}, {args.images} images {args.min_side}-{args.max_side} px, "
          f"{torch.get_num_threads()} threads. Tokens run: padded {ways[0].tokens_processed:,}, "
          f"packed {ways[1].tokens_processed:,}; calls: {len(ways[0].batches)} / {len(ways[1].batches)}.\n")
    print(f"Self CPU time per operator class, ms per step (median of {args.steps} profiled steps):\n")
    print(f"| operator class | {names[0]} ms | {names[1]} ms | packed / padded |")
    print("|---|---:|---:|---:|")
    for label in (*CLASSES, "other"):
        a, b = times[0][label], times[1][label]
        print(f"| {label} | {a:,.0f} | {b:,.0f} | {f'{b / a:.2f}' if a else '–'} |")
    total = [sum(t.values()) for t in times]
    print(f"| **all** | **{total[0]:,.0f}** | **{total[1]:,.0f}** | **{total[1] / total[0]:.2f}** |\n")
    best = best_vs_padded(model, images, ways[0], times[0])
    print(f"Packed at padded's speed per token, no overhead at all: {best:.2f}x "
          "padded's real tokens/s (every op but attention scales with the slots run, attention with the sum of "
          "each sequence's length squared).\n")
    print("Tensors alive at each way's memory peak, by the operator that made them and their last dimension:\n")
    print("| way | peak MiB | largest holders (MiB) |")
    print("|---|---:|---|")
    for name, (peak, held) in zip(names, memory, strict=True):
        top = ", ".join(f"{label} {size / MIB:.1f}" for label, size in held.most_common(args.top))
        rest = sum(held.values()) - sum(size for _, size in held.most_common(args.top))
        print(f"| {name} | {peak:.1f} | {top}{f', the rest {rest / MIB:.1f}' if rest else ''} |")


if __name__ == "__main__":
    main()
