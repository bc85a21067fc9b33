"""`vitkit bench`: vitkit against timm, vit-pytorch and HF; `bench attention`; `bench memory`; `bench packing`;
`bench tower`.

`vitkit bench [--model NAME ...]` is the model benchmark; the subcommands are the kernel, gradient-checkpointing,
packing and VLM-tower benchmarks. Each parses its options and calls `vitkit.bench`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..choices import BENCH_ATTENTION_BACKENDS
from .app import app
from .output import print_table

bench_app = typer.Typer(
    name="bench",
    help="Benchmark vitkit against its peers (default), its attention kernels, or gradient checkpointing.",
    add_completion=False,
    rich_markup_mode=None,  # plain help, as the root app's
)
app.add_typer(bench_app)

ATTENTION = typer.Option("auto", "--attention", help="vitkit's attention backend.")
STEPS = (10, "Timed steps; the median and spread are reported.")
WARMUP = (2, "Untimed steps first.")


def _options(steps: tuple[int, str], warmup: tuple[int, str]) -> list[inspect.Parameter]:
    """The options every benchmark command ends with, in this order (`steps` / `warmup`: default and help)."""
    return [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
        for name, annotation, option in [
            ("precision", str, typer.Option("fp32", "--precision", help=(
                "The model benchmark: auto, fp32, bf16 / fp16 (weights in it), bf16-autocast / fp16-autocast or int8 "
                "(CPU); its train mode runs the nearest autocast one. The others: fp32, or bf16 / fp16 under "
                "autocast."))),
            ("steps", int, typer.Option(steps[0], "--steps", help=steps[1])),
            ("warmup", int, typer.Option(warmup[0], "--warmup", help=warmup[1])),
            ("device", str, typer.Option("auto", "--device", help="auto (CUDA when visible), cpu, cuda or cuda:N.")),
            ("seed", int, typer.Option(0, "--seed", help="Seed of weights and inputs (the same for every candidate).")),
            ("threads", int | None,
             typer.Option(None, "--threads", help="torch intra-op threads (default: torch's, one per core).")),
            ("json_path", Path | None,
             typer.Option(None, "--json", metavar="FILE", help="Also write the full report as JSON.")),
            ("plot_path", Path | None, typer.Option(None, "--plot", metavar="FILE", help="Also draw a PNG chart.")),
        ]
    ]


def split_list(value: str, option: str) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), blanks dropped; ValueError naming `option` when nothing is left."""
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    if not items:
        raise ValueError(f"{option} needs at least one name, got {value!r}")
    return items


def parse_ints(value: str, option: str) -> tuple[int, ...]:
    """'197,577' or '0-12' (a range, ends included) -> integers; ValueError naming `option`."""
    numbers: list[int] = []
    try:
        for item in split_list(value, option):
            low, _, high = item.partition("-")
            numbers += range(int(low), int(high or low) + 1)
    except ValueError:
        raise ValueError(f"{option} takes comma-separated integers or ranges like 0-12, got {value!r}") from None
    return tuple(numbers)


def _progress(message: str) -> None:
    typer.echo(f"running {message} ...", err=True)


def benchmark(kind: str, *, keys: int = 1, steps: tuple[int, str] = STEPS, warmup: tuple[int, str] = WARMUP
              ) -> Callable:
    """Make a function that returns a benchmark's report into a command: its own options, then --precision, --steps,
    --warmup, --device, --seed, --threads (passed on to it as keyword arguments, for its settings), --json and
    --plot.

    Typer reads the options from the signature, so the shared ones are declared once, in `_options`, and appended
    to the function's own. The command prints the report as `vitkit.bench.report.{kind}_table` (its first `keys`
    columns name a row: a table too wide for the terminal is printed in parts that repeat them), and writes it as
    JSON / draws it with `vitkit.bench.plots.plot_{kind}` when asked; a function that returns None (a subcommand
    runs instead) prints nothing.
    """
    def decorate(make_report: Callable[..., dict | None]) -> Callable[..., None]:
        @functools.wraps(make_report)
        def command(*args: Any, json_path: Path | None, plot_path: Path | None, **kwargs: Any) -> None:
            report = make_report(*args, **kwargs)
            if report is None:
                return
            from ..bench import report as reports

            print_table(getattr(reports, f"{kind}_table")(report), keys=keys)
            if json_path is not None:
                reports.write_json(json_path, report)
            if plot_path is not None:
                from ..bench import plots

                getattr(plots, f"plot_{kind}")(report, plot_path)

        own = inspect.signature(make_report).parameters.values()
        command.__signature__ = inspect.Signature([p for p in own if p.kind is not p.VAR_KEYWORD]
                                                  + _options(steps, warmup))
        return command

    return decorate


@bench_app.callback(invoke_without_command=True)
@benchmark("model", keys=2)  # candidate, mode
def bench(
    ctx: typer.Context,
    model: str = typer.Option("vit_small_patch16_224", "--model", help="A registered model (see `vitkit models`)."),
    mode: str = typer.Option("infer", "--mode", help="infer (inference_mode), train (fwd+bwd+AdamW) or both."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per step."),
    img_size: int | None = typer.Option(None, "--img-size", help="Image size (default: the model's)."),
    attention: str = typer.Option(
        "auto", "--attention", help="vitkit rows: auto, all, or backends like sdpa,math,flex."
    ),
    peers: str = typer.Option(
        "all", "--peers",
        help="timm, vit-pytorch, vit-pytorch-flash, hf, onnxruntime (comma-separated), all, or none.",
    ),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile every candidate (warm-up compiles)."),
    grad_checkpointing: int = typer.Option(
        0, "--grad-checkpointing", help="Train mode: recompute the first N blocks in backward."
    ),
    rounds: int = typer.Option(
        1, "--rounds", help="Run the candidates in turn this many times and pool their steps (fair under load)."
    ),
    **run: Any,
) -> dict | None:
    """Time vitkit and the libraries users would pick instead, each in its own process, on the same batch.

    Reports median img/s and ms/step with their spread, peak memory, GFLOPs per image, achieved
    GFLOP/s, efficiency against same-shape matrix products on this device, and the ratio to the first peer.
    """
    if ctx.invoked_subcommand is not None:
        return None
    from ..bench.runner import ModelBenchSettings, run_model_bench

    settings = ModelBenchSettings(
        model=model, mode=mode, batch_size=batch_size, img_size=img_size,
        attention=split_list(attention, "--attention"), peers=split_list(peers, "--peers"), compile=compile_,
        grad_checkpointing=grad_checkpointing, rounds=rounds, **run,
    )
    return run_model_bench(settings, progress=_progress).to_dict()


@bench_app.command("attention")
@benchmark("attention", keys=3)  # backend, tokens, pass
def bench_attention(
    tokens: str = typer.Option("197,577,1025,4097", "--tokens", help="Token counts, comma-separated."),
    heads: int = typer.Option(12, "--heads", help="Attention heads."),
    head_dim: int = typer.Option(64, "--head-dim", help="Width of each head."),
    batch_size: int = typer.Option(1, "--batch-size", help="Sequences per call."),
    backends: str = typer.Option(",".join(BENCH_ATTENTION_BACKENDS), "--backends", help="Kernels to time, or all."),
    **run: Any,
) -> dict | None:
    """Kernel time and memory of each attention backend, forward and forward+backward, over token counts."""
    from ..bench.attention_bench import AttentionBenchSettings, run_attention_bench

    settings = AttentionBenchSettings(
        tokens=parse_ints(tokens, "--tokens"), heads=heads, head_dim=head_dim, batch_size=batch_size,
        backends=split_list(backends, "--backends"), **run,
    )
    return run_attention_bench(settings, progress=_progress)


@bench_app.command("memory")
@benchmark("memory", steps=(3, "Timed training steps per level."), warmup=(1, "Untimed steps first."))
def bench_memory(
    model: str = typer.Option("vit_base_patch16_224", "--model", help="A registered VisionTransformer."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per training step."),
    img_size: int | None = typer.Option(None, "--img-size", help="Image size (default: the model's)."),
    levels: str | None = typer.Option(
        None, "--levels", help="Recomputed-block counts, e.g. 0,6,12 or 0-12 (default: 0 to depth)."
    ),
    attention: str = ATTENTION,
    **run: Any,
) -> dict | None:
    """Peak training memory and step time for num_recomputing_layers = 0 ... depth (the trade-off curve)."""
    from ..bench.memory_bench import MemoryBenchSettings, run_memory_bench

    settings = MemoryBenchSettings(
        model=model, batch_size=batch_size, img_size=img_size, attention=attention,
        levels=None if levels is None else parse_ints(levels, "--levels"), **run,
    )
    return run_memory_bench(settings, progress=_progress)


@bench_app.command("packing")
@benchmark("packing", steps=(3, "Timed passes over the whole set, per round."),
           warmup=(1, "Untimed passes first, per round."))
def bench_packing(
    model: str = typer.Option("vit_small_patch16_224", "--model", help="A registered VisionTransformer."),
    images: int = typer.Option(24, "--images", help="Random images in the set."),
    min_side: int = typer.Option(112, "--min-side", help="Smallest height / width in pixels."),
    max_side: int = typer.Option(448, "--max-side", help="Largest height / width in pixels."),
    side_step: int = typer.Option(16, "--side-step", help="Sides are min-side + k * side-step, uniform in k."),
    max_tokens: str = typer.Option(
        "512,1024,2048,4096", "--max-tokens",
        help="Tokens per packed sequence, one packed row each (comma-separated); one too small for the largest "
             "image is skipped with the reason.",
    ),
    batch_size: int = typer.Option(8, "--batch-size", help="Padded images per forward (packed: as many tokens)."),
    mode: str = typer.Option("infer", "--mode", help="infer (inference_mode) or train (forward + backward)."),
    attention: str = ATTENTION,
    rounds: int = typer.Option(1, "--rounds", help="The ways take turns this many times; step times are pooled."),
    **run: Any,
) -> dict | None:
    """Mixed-size images packed (NaViT, attention per image), padded to the largest, and one at a time: tokens/s
    and memory."""
    from ..bench.packing_bench import PackingBenchSettings, run_packing_bench

    settings = PackingBenchSettings(
        model=model, images=images, min_side=min_side, max_side=max_side, side_step=side_step,
        max_tokens=parse_ints(max_tokens, "--max-tokens"), batch_size=batch_size, mode=mode, attention=attention,
        rounds=rounds, **run,
    )
    return run_packing_bench(settings, progress=_progress)


@bench_app.command("tower")
@benchmark("tower", steps=(3, "Timed passes over the whole set, per round."),
           warmup=(1, "Untimed passes first, per round."))
def bench_tower(
    model: str = typer.Option(
        "qwen2_5_vl_vision_7b", "--model", help="A registered qwen2_5_vl_vision_* or qwen3_vl_vision_* tower."
    ),
    depth: int = typer.Option(
        4, "--depth", help="Blocks kept; Qwen2.5-VL keeps a full-attention block and windowed ones."
    ),
    images: int = typer.Option(16, "--images", help="Random images in the set."),
    min_side: int = typer.Option(112, "--min-side", help="Smallest raw side in px (then smart_resize)."),
    max_side: int = typer.Option(448, "--max-side", help="Largest raw side in px (then smart_resize)."),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", help="vitkit's tokens per packed sequence (default: all images in one, as transformers)."
    ),
    attention: str = ATTENTION,
    rounds: int = typer.Option(1, "--rounds", help="The ways take turns this many times; step times are pooled."),
    width: int | None = typer.Option(None, "--width", hidden=True, help="Narrow the tower (quick runs, tests)."),
    **run: Any,
) -> dict | None:
    """A VLM's vision tower (Qwen2.5-VL, Qwen3-VL) packed in vitkit against transformers' tower, same images and
    weights: img/s, patch tokens/s and the ratio, after checking that both give the same merged tokens."""
    from ..bench.tower_bench import TowerBenchSettings, run_tower_bench

    settings = TowerBenchSettings(
        model=model, depth=depth, images=images, min_side=min_side, max_side=max_side, max_tokens=max_tokens,
        attention=attention, rounds=rounds, width=width, **run,
    )
    return run_tower_bench(settings, progress=_progress)
