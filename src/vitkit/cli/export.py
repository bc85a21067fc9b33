"""`vitkit export --checkpoint DIR OUT`: a model directory -> ONNX or a torch.export program, checked against
PyTorch at two batch sizes before the file is written; the check is printed."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from ..choices import DEFAULT_OPSET, EXPORT_BACKENDS
from .app import app
from .convert import parse_size
from .output import echo_json

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}


def resolve_format(fmt: str | None, out: Path) -> str:
    """The export format: as given, or from OUT's suffix (.onnx, .pt2)."""
    if fmt is None:
        by_suffix = {suffix: name for name, suffix in FORMATS.items()}
        if out.suffix not in by_suffix:
            raise ValueError(f"cannot tell the format from {out.name}; pass --format {' or --format '.join(FORMATS)}")
        return by_suffix[out.suffix]
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


@app.command("export")
def export_command(
    out: Path = typer.Argument(..., metavar="OUT", help="Output file: OUT.onnx or OUT.pt2."),
    checkpoint: Path = typer.Option(..., help="A vitkit model (or run) directory: config.json + model.safetensors; or "
                                                     "published weights NAME.TAG."),
    fmt: str | None = typer.Option(None, "--format", help="onnx or torch-export (default: from OUT's suffix)."),
    dynamic_batch: bool = typer.Option(True, "--dynamic-batch/--static-batch",
                                       help="A symbolic batch axis (checked at batch 1 and 3), or a fixed one."),
    batch_size: int = typer.Option(1, "--batch-size", help="The fixed batch of --static-batch."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", help="ONNX opset (>= 17; 23 emits ONNX Attention ops)."),
    img_size: str | None = typer.Option(None, "--img-size", help="Export at N or HxW pixels (resamples positions)."),
    attention: str = typer.Option("auto", "--attention", help=f"Attention traced into the graph: "
                                  f"auto (sdpa) or {' or '.join(EXPORT_BACKENDS)}, whatever the model runs "
                                  "otherwise."),
    external_data: bool = typer.Option(False, "--external-data",
                                       help="ONNX: weights in OUT.onnx.data (always so past 2 GB)."),
    atol: float = typer.Option(1e-4, "--atol", help="Largest |difference| from PyTorch the check accepts."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export a model to ONNX (checked with onnxruntime) or a torch.export program (.pt2, reloaded and checked)."""
    fmt = resolve_format(fmt, out)
    if out.suffix != FORMATS[fmt]:
        raise ValueError(f"--format {fmt} writes a {FORMATS[fmt]} file; name OUT accordingly, got {out.name}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size}")
    if not atol > 0:
        raise ValueError(f"--atol must be positive, got {atol}")
    from ..checkpoints import load_model_dir
    from ..deploy import export_onnx, export_program

    model = load_model_dir(checkpoint, argument="--checkpoint", img_size=parse_size(img_size))
    common = dict(dynamic_batch=dynamic_batch, batch_size=batch_size, attention=attention, atol=atol)
    if fmt == "onnx":
        result = export_onnx(model, out, opset=opset, external_data=external_data or None, **common)
    else:
        result = export_program(model, out, **common)
    if as_json:
        check = asdict(result.check) | {"passed": result.check.passed}
        echo_json({"format": fmt, "path": str(result.path), "files": [str(f) for f in result.files], "check": check})
        return
    for path in result.files:
        typer.echo(f"wrote: {path}")
    typer.echo(result.check.describe())
