"""`vitkit train`: train a model (by default the digits ViT on bundled data) with a live progress bar."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..train import RunSummary, TrainOptions, train
from .app import app
from .output import console


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
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task = None
        self.epochs = 0

    def start(self, total_steps: int, done_steps: int, epochs: int, steps_per_epoch: int) -> None:
        self.epochs = epochs
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=done_steps,
                                           epoch=done_steps // max(steps_per_epoch, 1) + 1, epochs=epochs,
                                           loss=float("nan"), rate=0.0)

    def step(self, epoch: int, step: int, loss: float, images_per_second: float) -> None:
        self.progress.update(self.task, completed=step, epoch=epoch + 1, loss=loss, rate=images_per_second)

    def epoch(self, record: dict) -> None:
        self.progress.console.print(
            f"epoch {record['epoch'] + 1:>3}/{self.epochs}  train loss {record['train_loss']:.4f}  "
            f"val loss {record['val_loss']:.4f}  top-1 {100 * record['val_top1']:.2f}%  "
            f"top-5 {100 * record['val_top5']:.2f}%"
        )

    def close(self) -> None:
        self.progress.stop()


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
        ("best val top-1", f"{100 * summary.best_top1:.2f}%" if summary.best_top1 >= 0 else "-"),
        ("last val top-1", f"{100 * summary.last.top1:.2f}%" if summary.last else "-"),
        ("last val top-5", f"{100 * summary.last.top5:.2f}%" if summary.last else "-"),
        ("wall time", f"{summary.seconds:.1f} s"),
        ("throughput", f"{summary.images_per_second:.0f} img/s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


@app.command("train")
def train_command(
    model: str = typer.Option("vit_digits", help="Registered model name (see `vitkit models`)."),
    pretrained: str | None = typer.Option(None, help="Fine-tune a vitkit model directory (new head if needed)."),
    data: str = typer.Option("digits", help="'digits' (bundled) or an image folder: train/ + val/, or classes."),
    val_split: float | None = typer.Option(None, help="Validation fraction for a folder without train/ and val/."),
    img_size: int | None = typer.Option(None, help="Input size (default: the model's)."),
    epochs: int = typer.Option(30, help="Training epochs."),
    batch_size: int = typer.Option(64, help="Global batch size (split across processes and --grad-accum)."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW)."),
    weight_decay: float = typer.Option(0.05, help="Weight decay (not on norms, biases, position tables, tokens)."),
    warmup_epochs: float = typer.Option(3.0, help="Linear warm-up before the cosine decay."),
    label_smoothing: float = typer.Option(0.1, help="Label smoothing of the cross-entropy."),
    drop_path: float | None = typer.Option(None, help="Stochastic depth rate (default: the model's)."),
    precision: str = typer.Option("fp32", help="fp32 | bf16 | fp16 (autocast; GradScaler for fp16 on CUDA)."),
    grad_checkpointing: int = typer.Option(0, help="Recompute the first N blocks in backward."),
    attention: str = typer.Option("auto", help="Attention backend (see `vitkit doctor`)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    grad_accum: int = typer.Option(1, help="Micro-batches per optimizer step."),
    workers: int = typer.Option(0, help="DataLoader worker processes."),
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
    token_drop: float = typer.Option(0.0, help="With --packing: NaViT token-dropping rate in training."),
    resume: Path | None = typer.Option(None, help="Continue the run in this directory."),
) -> None:
    """Train a model; by default the digits ViT on scikit-learn's bundled 8x8 digits."""
    options = TrainOptions(
        model=model, pretrained=pretrained, data=data, val_split=val_split, img_size=img_size, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing, drop_path=drop_path, precision=precision,
        grad_checkpointing=grad_checkpointing, attention=attention, compile=compile, grad_accum=grad_accum,
        workers=workers, seed=seed, deterministic=deterministic, device=device,
        out=None if out is None else str(out), save_every=save_every,
        fsdp=fsdp, packing=packing, max_tokens=max_tokens, token_drop=token_drop,
    )
    is_main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 draws and prints
    summary = train(options, resume=resume, reporter=RichReporter() if is_main else None)
    if is_main:
        console().print(_summary(summary))
    if summary.interrupted:
        raise typer.Exit(130)
