"""`vitkit train`: train a model (by default the digits ViT on bundled data) with a live progress bar."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .app import app
from .output import console, print_table

if TYPE_CHECKING:
    from ..train import RunSummary
    from ..train.optim import GroupSummary


class RichReporter:
    """A rich progress bar: epoch, step, loss, images per second, ETA; a line per epoch."""

    def __init__(self) -> None:
        self.console = console()
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[rate]:.0f} img/s"),
            TextColumn("data {task.fields[data]:.0%}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task = None
        self.epochs = 0

    def start(self, total_steps: int, done_steps: int, epochs: int, steps_per_epoch: int,
              groups: list[GroupSummary]) -> None:
        self.epochs = epochs
        print_table(_groups_table(groups), out=self.console)
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=done_steps,
                                           epoch=done_steps // max(steps_per_epoch, 1) + 1, epochs=epochs,
                                           loss=float("nan"), rate=0.0, data=0.0)

    def step(self, epoch: int, step: int, loss: float, images_per_second: float, data_share: float) -> None:
        """`data_share`: the part of the step spent waiting for the next batch."""
        self.progress.update(self.task, completed=step, epoch=epoch + 1, loss=loss, rate=images_per_second,
                             data=data_share)

    def epoch(self, record: dict) -> None:
        ema = f"  EMA top-1 {100 * record['ema_val_top1']:.2f}%" if "ema_val_top1" in record else ""
        self.progress.console.print(
            f"epoch {record['epoch'] + 1:>3}/{self.epochs}  train loss {record['train_loss']:.4f}  "
            f"val loss {record['val_loss']:.4f}  top-1 {100 * record['val_top1']:.2f}%  "
            f"top-5 {100 * record['val_top5']:.2f}%{ema}"
        )

    def close(self) -> None:
        self.progress.stop()


def _groups_table(groups: list[GroupSummary]) -> Table:
    """The optimizer's parameter groups: what trains, at which share of the learning rate, with what decay."""
    table = Table(title="optimizer parameter groups")
    for name in ("group", "tensors", "parameters", "lr scale", "weight decay"):
        table.add_column(name, justify="left" if name == "group" else "right")
    for g in groups:
        table.add_row(g.name, str(g.tensors), f"{g.params:,}", f"{g.lr_scale:.4g}", f"{g.weight_decay:g}")
    return table


def _summary(summary: RunSummary) -> Table:
    """The run's outcome as a titled name/value table: the columns need no header row, and a long run
    directory wraps rather than being cut short."""
    table = Table(title="interrupted: resumable checkpoint saved" if summary.interrupted else "training done",
                  show_header=False)
    table.add_column()
    table.add_column(justify="right", overflow="fold")
    rows = [
        ("run directory", str(summary.run_dir)),
        ("epochs", str(summary.epochs)),
        ("optimizer steps", str(summary.steps)),
        ("best val top-1", f"{100 * summary.best_top1:.2f}% ({summary.best_weights} weights)"
         if summary.best_top1 >= 0 else "-"),
        ("last val top-1", f"{100 * summary.last.top1:.2f}%" if summary.last else "-"),
        ("last val top-5", f"{100 * summary.last.top5:.2f}%" if summary.last else "-"),
        ("wall time", f"{summary.seconds:.1f} s"),
        ("throughput", f"{summary.images_per_second:.0f} img/s"),
        ("unreadable files skipped", str(len(summary.skipped))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


@app.command("train")
def train_command(
    model: str = typer.Option("vit_digits", help="Registered model name (see `vitkit models`)."),
    pretrained: str | None = typer.Option(None, help="Fine-tune a vitkit model directory, or published weights "
                                                     "NAME.TAG (new head if needed)."),
    data: str = typer.Option("digits", help="'digits' (bundled) or an image folder: train/ + val/, or classes."),
    val_split: float | None = typer.Option(None, help="Validation fraction for a folder without train/ and val/."),
    img_size: int | None = typer.Option(None, help="Input size (default: the model's)."),
    epochs: int | None = typer.Option(None, help="Training epochs (default 30); with --resume, the run's new "
                                                 "total (a finished run trains on to it)."),
    batch_size: int = typer.Option(64, help="Global batch size (split across processes and --grad-accum)."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW)."),
    layer_decay: float | None = typer.Option(None, help="Per-block lr scale: head 1.0, each block below x this."),
    clip_grad: float | None = typer.Option(None, help="Clip the gradients' global norm to this."),
    weight_decay: float = typer.Option(0.05, help="Weight decay (not on norms, biases, position tables, tokens)."),
    warmup_epochs: float = typer.Option(3.0, help="Linear warm-up before the cosine decay."),
    label_smoothing: float = typer.Option(0.1, help="Label smoothing of the cross-entropy."),
    drop_path: float | None = typer.Option(None, help="Stochastic depth rate (default: the model's)."),
    precision: str = typer.Option("fp32", help="fp32 | bf16 | fp16 (autocast; GradScaler for fp16 on CUDA)."),
    grad_checkpointing: int = typer.Option(0, help="Recompute the first N blocks in backward."),
    attention: str = typer.Option("auto", help="Attention backend (see `vitkit doctor`)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    grad_accum: int = typer.Option(1, help="Micro-batches per optimizer step."),
    workers: str = typer.Option("auto", help="DataLoader processes; auto: min(cores, 8) for folders, 0 for digits."),
    seed: int = typer.Option(0, help="Seed of initialisation, data order and augmentation."),
    deterministic: bool = typer.Option(
        False, "--deterministic", help="Deterministic kernels only: two runs with one seed give identical weights."
    ),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when present)."),
    out: Path | None = typer.Option(None, help="Run directory (default: runs/<model>-<time>)."),
    save_every: int = typer.Option(0, help="Also checkpoint every N optimizer steps (0: each epoch end)."),
    fsdp: bool = typer.Option(False, "--fsdp", help="Shard with FSDP2 across torchrun processes."),
    packing: bool = typer.Option(
        False, "--packing", help="NaViT: keep each image's aspect ratio (longest side capped) and pack batches."
    ),
    max_tokens: int | None = typer.Option(None, help="With --packing: tokens per sequence (default: 4 full images)."),
    max_patches: int | None = typer.Option(None, help="With --packing: size each image to at most this many "
                                                      "patches, aspect ratio kept (SigLIP2's NaFlex rule)."),
    token_drop: float = typer.Option(0.0, help="With --packing: NaViT token-dropping rate in training."),
    aa: str = typer.Option("none", "--aa", help="Auto-augment: rand-m9-mstd0.5-inc1 | trivial | augmix | none."),
    reprob: float = typer.Option(0.0, help="Random-erasing probability."),
    color_jitter: float = typer.Option(0.0, help="Colour-jitter strength (brightness, contrast, saturation)."),
    scale: tuple[float, float] = typer.Option((0.08, 1.0), help="Random-resized-crop area range."),
    ratio: tuple[float, float] = typer.Option((3 / 4, 4 / 3), help="Random-resized-crop aspect range."),
    hflip: float = typer.Option(0.5, help="Horizontal-flip probability."),
    interpolation: str | None = typer.Option(None, help="bicubic | bilinear (default: the model's)."),
    crop_pct: float | None = typer.Option(None, help="Evaluation centre crop (default: the model's weights')."),
    mixup: float = typer.Option(0.0, help="Mixup alpha (0: off)."),
    cutmix: float = typer.Option(0.0, help="CutMix alpha (0: off)."),
    mixup_prob: float = typer.Option(1.0, help="Probability a batch is mixed."),
    mixup_switch_prob: float = typer.Option(0.5, help="Probability of cutmix when both are on."),
    model_ema: bool = typer.Option(False, "--model-ema", help="Keep an EMA of the weights; save the better."),
    model_ema_decay: float = typer.Option(0.9998, help="EMA decay per optimizer step."),
    freeze: list[str] = typer.Option([], help="Freeze parameters matching this pattern (repeatable)."),
    linear_probe: bool = typer.Option(False, "--linear-probe", help="Train only the head and fc_norm."),
    settings: list[str] = typer.Option([], "--set", help="Model config field, FIELD=VALUE (repeatable)."),
    skip_unreadable: bool = typer.Option(
        False, "--skip-unreadable", help="Leave unreadable images out (listed at the end) instead of stopping."
    ),
    resume: Path | None = typer.Option(None, help="Continue the run in this directory."),
) -> None:
    """Train a model; by default the digits ViT on scikit-learn's bundled 8x8 digits."""
    from ..train import TrainOptions, train

    options = TrainOptions(
        model=model, pretrained=pretrained, data=data, val_split=val_split, img_size=img_size,
        epochs=TrainOptions.epochs if epochs is None or resume is not None else epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing, drop_path=drop_path, precision=precision,
        grad_checkpointing=grad_checkpointing, attention=attention, compile=compile, grad_accum=grad_accum,
        workers=workers if workers == "auto" else _count(workers, "--workers"), seed=seed,
        deterministic=deterministic, device=device,
        out=None if out is None else str(out), save_every=save_every,
        fsdp=fsdp, packing=packing, max_tokens=max_tokens, max_patches=max_patches, token_drop=token_drop,
        layer_decay=layer_decay,
        clip_grad=clip_grad, aa=aa, reprob=reprob, color_jitter=color_jitter, scale=scale, ratio=ratio, hflip=hflip,
        interpolation=interpolation, crop_pct=crop_pct, mixup=mixup, cutmix=cutmix, mixup_prob=mixup_prob,
        mixup_switch_prob=mixup_switch_prob, model_ema=model_ema, model_ema_decay=model_ema_decay,
        freeze=tuple(freeze), linear_probe=linear_probe, overrides=tuple(settings), skip_unreadable=skip_unreadable,
    )
    is_main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 draws and prints
    summary = train(options, resume=resume, epochs=epochs if resume is not None else None,
                    reporter=RichReporter() if is_main else None)
    if summary.finished_before:
        if is_main:
            best = f", best val top-1 {100 * summary.best_top1:.2f}%" if summary.best_top1 >= 0 else ""
            typer.echo(f"{summary.run_dir} has finished: {summary.epochs} of {summary.epochs} epochs trained{best}; "
                       f"to train on, add --epochs N (more than {summary.epochs})")
        return
    if is_main:
        print_table(_summary(summary))
        for path in summary.skipped:
            console().print(f"skipped unreadable image: {path}", soft_wrap=True, markup=False, highlight=False)
    if summary.interrupted:
        raise typer.Exit(130)


def _count(text: str, option: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{option} must be 'auto' or an integer >= 0, got {text!r}") from None
