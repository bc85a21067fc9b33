"""`vitkit eval` and `vitkit predict`: a trained run's accuracy on a dataset, and its top-k labels for images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from .app import app
from .output import ATTENTION_HELP, PRECISION_HELP, TRUST_PICKLE_HELP, console, echo_json, precision_line, print_table

if TYPE_CHECKING:
    import torch

    from ..data import DataConfig

MAX_PATCHES_HELP = ("Size each image to at most this many patches, aspect ratio kept (SigLIP2's NaFlex rule; implies "
                    "--packing).")


def _load(checkpoint: Path, trust_pickle: bool, attention: str | None,
          max_patches: int | None) -> tuple[torch.nn.Module, DataConfig, list[str]]:
    """The model of a run or model directory (on the `attention` kernel), its data config (with a NaFlex patch
    budget, when given) and class names."""
    if max_patches is not None and max_patches <= 0:
        raise ValueError(f"--max-patches must be a positive integer, got {max_patches}")
    from ..checkpoints import load_pretrained
    from ..data import DataConfig
    from ..train import RunDir

    model = load_pretrained(checkpoint, trust_pickle=trust_pickle, attention=attention)
    labels = RunDir(checkpoint).labels() or [str(i) for i in range(model.num_classes)]
    return model, DataConfig.of(model.config, max_patches), labels


@app.command("eval")
def eval_command(
    checkpoint: Path = typer.Option(..., help="A run (or model) directory with config.json + model.safetensors, or "
                                                     "published weights NAME.TAG."),
    data: str = typer.Option("digits", help="'digits' or an image folder (its val/ split is evaluated)."),
    val_split: float | None = typer.Option(None, help="Validation fraction for a folder without train/ and val/."),
    batch_size: int = typer.Option(256, help="Images per forward pass."),
    confusion: Path | None = typer.Option(None, help="Confusion-matrix PNG (default: CHECKPOINT/confusion.png)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=TRUST_PICKLE_HELP),
    packing: bool = typer.Option(
        False, "--packing", help="Keep each image's aspect ratio (longest side capped) and pack batches (NaViT)."
    ),
    max_tokens: int | None = typer.Option(None, help="With --packing: tokens per sequence (default: 4 full images)."),
    max_patches: int | None = typer.Option(None, help=MAX_PATCHES_HELP),
    attention: str | None = typer.Option(None, "--attention", help=ATTENTION_HELP, show_default=False),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """Top-1 / top-5 accuracy, a per-class table and a confusion-matrix PNG."""
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size}")
    packing = packing or max_patches is not None
    if max_tokens is not None and (max_tokens <= 0 or not packing):
        raise ValueError(f"--max-tokens needs --packing and a positive integer, got {max_tokens}")
    import torch

    from ..data import load_splits
    from ..data.packed import PackCollate
    from ..runtime import prepare_inference, setup
    from ..train import evaluate
    from ..train.plots import plot_confusion

    model, data_config, labels = _load(checkpoint, trust_pickle, attention, max_patches)
    env = setup("cpu")
    model, chosen, why = prepare_inference(model, precision, env.device)
    precision_line(chosen.name, why, err=as_json)
    splits = load_splits(data, data_config, val_split=val_split, keep_aspect=packing)
    if len(splits.classes) != model.num_classes:
        raise ValueError(f"{data} has {len(splits.classes)} classes, the model {model.num_classes}")
    collate = None
    if packing:
        tokens = max_tokens or data_config.max_tokens(model.num_prefix_tokens)
        collate = PackCollate.for_model(model, tokens)
    loader = torch.utils.data.DataLoader(splits.val, batch_size=batch_size, collate_fn=collate)
    result = evaluate(model, loader, model.num_classes, env, chosen.context(env.device), chosen.inputs)
    confusion = confusion or checkpoint / "confusion.png"
    plot_confusion(result.confusion, labels, confusion)
    if as_json:
        echo_json({"top1": result.top1, "top5": result.top5, "loss": result.loss, "count": result.count,
                   "precision": chosen.name,
                   "per_class": dict(zip(labels, result.per_class, strict=True)), "confusion_png": str(confusion)})
        return
    table = Table(title=f"{checkpoint} on {data} ({result.count} images)")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("accuracy", justify="right")
    for name, count, recall in zip(labels, result.confusion.sum(dim=1).tolist(), result.per_class, strict=True):
        table.add_row(name, str(count), f"{100 * recall:.2f}%")
    out = console()
    print_table(table, out=out)
    out.print(f"top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%  loss {result.loss:.4f}  "
              f"confusion matrix: {confusion}")


@app.command("predict")
def predict_command(
    images: list[Path] = typer.Argument(..., help="Image files."),
    checkpoint: Path = typer.Option(..., help="A run (or model) directory, or published weights NAME.TAG."),
    top_k: int = typer.Option(5, help="Labels per image."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=TRUST_PICKLE_HELP),
    max_patches: int | None = typer.Option(None, help=MAX_PATCHES_HELP),
    attention: str | None = typer.Option(None, "--attention", help=ATTENTION_HELP, show_default=False),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP),
) -> None:
    """The top-k labels of each image, with probabilities."""
    if top_k <= 0:
        raise ValueError(f"--top-k must be a positive integer, got {top_k}")
    import torch

    from ..data import eval_transform
    from ..data.datasets import open_image
    from ..runtime import prepare_inference
    from ..train import predict

    model, data_config, labels = _load(checkpoint, trust_pickle, attention, max_patches)
    cpu = torch.device("cpu")
    model, chosen, why = prepare_inference(model, precision, cpu)
    precision_line(chosen.name, why, err=as_json)
    for path in images:
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
    # as `vitkit eval` and training's validation: timm's centre crop, or each image at its NaFlex size, packed
    prepare = eval_transform(data_config, keep_aspect=max_patches is not None)
    pictures = [prepare(open_image(path, data_config.in_chans)) for path in images]
    batch = model.pack(pictures, data_config.max_tokens(model.num_prefix_tokens)) if max_patches is not None else (
        torch.stack(pictures))
    with chosen.context(cpu):
        probs, indices = predict(model, batch.to(cpu, chosen.inputs), top_k)
    results = [
        {"image": str(path), "top": [{"label": labels[i], "probability": p} for p, i in
                                     zip(prob.tolist(), index.tolist(), strict=True)]}
        for path, prob, index in zip(images, probs, indices, strict=True)
    ]
    if as_json:
        echo_json(results)
        return
    table = Table(title=f"predictions of {checkpoint}")
    table.add_column("image")
    table.add_column("rank", justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for result in results:
        for rank, top in enumerate(result["top"], 1):
            table.add_row(result["image"] if rank == 1 else "", str(rank), top["label"], f"{top['probability']:.4f}")
    print_table(table)
