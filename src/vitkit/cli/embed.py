"""`vitkit embed`, `vitkit knn`, `vitkit probe`: a tower's features for a folder of images, written as shards, and
two ways to judge them (weighted kNN, logistic-regression probe)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..choices import EMBED_DTYPES, FEATURE_POOLS
from .app import app
from .output import ATTENTION_HELP, PRECISION_HELP, TRUST_PICKLE_HELP, console, echo_json, precision_line, print_table

if TYPE_CHECKING:
    import torch

    from ..embeddings import Scores


def _model(checkpoint: Path | None, model: str | None, pretrained: str | None, img_size: int | None,
           trust_pickle: bool, attention: str | None) -> tuple[torch.nn.Module, str]:
    """The tower and how to name it: a run/model directory, a registered name (with weights from a path), or the
    published weights NAME.TAG."""
    from ..checkpoints import create_model, load_pretrained
    from ..checkpoints.tags import pretrained_tag

    tag = pretrained_tag(pretrained)
    if tag is not None:
        if model not in (None, tag.model):
            raise ValueError(f"--pretrained {pretrained} holds weights of {tag.model}, not of --model {model}; drop "
                             "--model, or name weights of that model")
        model, pretrained = tag.name, True
    if (checkpoint is None) == (model is None):
        raise ValueError("give the model as --checkpoint DIR, or --model NAME [--pretrained PATH], or --pretrained "
                         "NAME.TAG (see `vitkit models --pretrained`)")
    size = {"img_size": img_size} if img_size else {}
    if checkpoint is not None:
        if pretrained is not None:
            raise ValueError("--pretrained goes with --model; --checkpoint already holds its weights")
        return load_pretrained(checkpoint, trust_pickle=trust_pickle, attention=attention, **size), str(checkpoint)
    tower = create_model(model, pretrained=pretrained, trust_pickle=trust_pickle, attention=attention, **size).eval()
    return tower, f"{model}" + (f" ({pretrained})" if isinstance(pretrained, str) else "")


class _Bar:
    """A progress bar of rows with img/s and ETA (rank 0 only: it counts its own rows)."""

    def __init__(self, show: bool) -> None:
        self.progress = Progress(TextColumn("embed"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]:.0f} img/s"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=console(), disable=not show)
        self.task = self.progress.add_task("embed", total=None, rate=0.0)
        self.start, self.done = time.perf_counter(), 0

    def __call__(self, rows: int, total: int) -> None:
        self.done += rows
        self.progress.update(self.task, advance=rows, total=total,
                             rate=self.done / max(time.perf_counter() - self.start, 1e-9))


@app.command("embed")
def embed_command(
    files: list[Path] = typer.Argument(None, help="Image files (instead of --data)."),
    out: Path = typer.Option(..., "--out", help="Directory for the shards, index.csv and embed_config.json."),
    checkpoint: Path | None = typer.Option(None, help="A run or model directory (config.json + weights)."),
    model: str | None = typer.Option(None, help="A registered model name (see `vitkit models`)."),
    pretrained: str | None = typer.Option(None, help="Weights: a path (any format load_pretrained reads) with "
                                                     "--model, or published weights NAME.TAG (`vitkit models "
                                                     "--pretrained`)."),
    data: str | None = typer.Option(None, help="An image folder (class folders give labels) or 'digits'."),
    split: str | None = typer.Option(None, help="train or val: for 'digits' or a folder with train/ and val/."),
    pool: str | None = typer.Option(None, help=f"{' | '.join(FEATURE_POOLS)}; default: the model's own. 'none' keeps "
                                               "every token (N, T, D)."),
    layer: int = typer.Option(-1, help="The block to read: -1 the last, -2 the one before (DeepSeek-VL2's "
                                       "select_layer), or 0..depth-1."),
    norm: bool = typer.Option(True, "--norm/--no-norm", help="Apply the final norm (and fc_norm after pooling)."),
    l2: bool = typer.Option(False, "--l2", help="Scale each row to unit length."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    precision: str = typer.Option("fp32", "--precision", help="Default fp32: the same rows on every machine. "
                                                              + PRECISION_HELP),
    dtype: str = typer.Option("fp32", help=f"Stored rows: {' | '.join(EMBED_DTYPES)}."),
    img_size: int | None = typer.Option(None, help="Run the model at this size (position table resampled)."),
    packing: bool = typer.Option(False, "--packing", help="Keep each image's aspect ratio and pack batches."),
    max_tokens: int | None = typer.Option(None, help="With --packing: tokens per sequence (default: 4 full images)."),
    max_patches: int | None = typer.Option(None, help="Size each image to at most this many patches, aspect ratio "
                                                      "kept (SigLIP2's NaFlex rule; implies --packing)."),
    shard_rows: int = typer.Option(10_000, help="Rows per shard."),
    workers: str = typer.Option("auto", help="DataLoader workers: auto = min(cores, 8) for files, 0 for digits."),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=TRUST_PICKLE_HELP),
    attention: str | None = typer.Option(None, "--attention", help=ATTENTION_HELP, show_default=False),
) -> None:
    """Features of every image, written as safetensors shards with an index (a second run resumes)."""
    if (data is None) == (not files):
        raise ValueError("give the images as --data FOLDER (or digits), or as a list of files, not both")
    if workers != "auto" and not workers.isdigit():
        raise ValueError(f"--workers must be 'auto' or an integer >= 0, got {workers!r}")
    from ..embeddings import embed
    from ..runtime import inference_precision, loader_workers, setup, teardown

    env = setup(device)
    try:
        chosen, why = inference_precision(precision, env.device)
        if env.is_main:
            precision_line(chosen.name, why)
        tower, name = _model(checkpoint, model, pretrained, img_size, trust_pickle, attention)
        tower.to(env.device)
        loaders = loader_workers(workers, data or "files")
        bar = _Bar(env.is_main)
        with bar.progress:
            done = embed(tower, data if data is not None else files, pool=pool, layer=layer, norm=norm, l2=l2,
                         batch_size=batch_size, precision=chosen.name, packing=packing, max_tokens=max_tokens,
                         max_patches=max_patches, workers=loaders, split=split, out=out, dtype=dtype,
                         shard_rows=shard_rows, rank=env.rank, world=env.world, source=name, progress=bar)
    finally:
        teardown()
    if env.is_main:
        console().print(f"embeddings of {name} in {done}")


def _print_scores(title: str, results: dict[str, Scores], classes: list[str], extra: dict, as_json: bool) -> None:
    if as_json:
        echo_json({**extra, "results": {k: s.as_dict(classes) for k, s in results.items()}})
        return
    table = Table(title=title)
    table.add_column("class")
    table.add_column("images", justify="right")
    for setting in results:
        table.add_column(f"{setting} top-1", justify="right")
    first = next(iter(results.values()))
    for i, name in enumerate(classes):
        table.add_row(name, str(first.counts[i]), *(f"{100 * s.per_class[i]:.2f}%" for s in results.values()))
    out = console()
    print_table(table, out=out)
    for setting, s in results.items():
        out.print(f"{setting}: top-1 {100 * s.top1:.2f}%  top-5 {100 * s.top5:.2f}%")


def _labelled(train: Path, val: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    from ..embeddings import encode_labels, load_embeddings

    x, train_index = load_embeddings(train)
    xv, val_index = load_embeddings(val)
    classes, y, yv = encode_labels(train_index.labels, val_index.labels)
    return x, y, xv, yv, classes


@app.command("knn")
def knn_command(
    train: Path = typer.Option(..., help="Embeddings of the labelled train images (vitkit embed --out)."),
    val: Path = typer.Option(..., help="Embeddings of the validation images."),
    k: str = typer.Option("10,20", "-k", help="Neighbours, comma-separated: one result per k."),
    temperature: float = typer.Option(0.07, help="Vote weight exp(similarity / temperature)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """DINOv2's weighted kNN on cosine similarity: top-1, top-5 and per-class accuracy for each k."""
    try:
        ks = [int(v) for v in k.split(",")]
    except ValueError as err:
        raise ValueError(f"-k takes positive integers separated by commas, got {k!r}") from err
    from ..embeddings import Scores, knn

    x, y, xv, yv, classes = _labelled(train, val)
    scores = knn(x, y, xv, ks=ks, temperature=temperature, num_classes=len(classes))
    results = {f"k={n}": Scores.of(s, yv) for n, s in scores.items()}
    _print_scores(f"kNN of {val} on {train} (T={temperature})", results, classes,
                  {"train": str(train), "val": str(val), "temperature": temperature}, as_json)


@app.command("probe")
def probe_command(
    train: Path = typer.Option(..., help="Embeddings of the labelled train images (vitkit embed --out)."),
    val: Path = typer.Option(..., help="Embeddings of the validation images."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Logistic regression on L2-normalised features, C chosen on a held-out 20% of the train rows."""
    from ..embeddings import Scores, probe

    x, y, xv, yv, classes = _labelled(train, val)
    probs, best, held_out = probe(x, y, xv)
    results = {f"C={best:g}": Scores.of(probs, yv)}
    _print_scores(f"linear probe of {val} on {train}", results, classes,
                  {"train": str(train), "val": str(val), "C": best,
                   "held_out_top1": {f"{c:g}": a for c, a in held_out.items()}}, as_json)
