"""`vitkit convert SRC OUT_DIR`: any supported checkpoint -> a vitkit, timm or HF directory, with a report of
the detected format, the config, the fields set by default, and every key that did not fit or was left out."""

from __future__ import annotations

import json

import typer

from ..choices import EXPORT_FORMATS
from .app import app
from .output import TRUST_PICKLE_HELP, echo_json


def parse_size(text: str | None, option: str = "--img-size") -> int | tuple[int, int] | None:
    """'384' -> 384, '320x480' -> (320, 480) (height x width); errors name `option`."""
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts, default=0) <= 0:
        raise ValueError(f"{option} must be N or HxW in pixels, got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


@app.command()
def convert(
    source: str = typer.Argument(..., metavar="SRC", help="Weights file, model directory, or hf-hub:org/name."),
    out_dir: str = typer.Argument(..., metavar="OUT_DIR", help="Directory to write."),
    source_format: str = typer.Option("auto", "--from", help="Source layout: auto, or a format `vitkit models "
                                                              "--pretrained-formats` lists."),
    to: str = typer.Option("vitkit", "--to", help=f"Output layout: {', '.join(EXPORT_FORMATS)}."),
    num_heads: int | None = typer.Option(None, "--num-heads", help="Attention heads, when the weights cannot say."),
    img_size: str | None = typer.Option(None, "--img-size", help="Build at N or HxW pixels (resamples positions)."),
    act_layer: str | None = typer.Option(None, "--act-layer", help="gelu, gelu_tanh, quick_gelu, silu, relu."),
    settings: list[str] = typer.Option([], "--set", help="Any other config field, FIELD=VALUE (repeatable)."),
    strict: bool = typer.Option(True, "--strict/--no-strict", help="Fail on any missing or unexpected key."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help=TRUST_PICKLE_HELP),
) -> None:
    """Convert a checkpoint; print the detected format, the config and the key report."""
    from ..checkpoints.detect import FORMATS
    from ..checkpoints.export import convert_checkpoint
    from ..models import parse_overrides

    overrides = parse_overrides(settings)
    overrides.update({k: v for k, v in (("num_heads", num_heads), ("act_layer", act_layer)) if v is not None})
    loaded, files = convert_checkpoint(source, out_dir, source_format=source_format, to=to, strict=strict,
                                       img_size=parse_size(img_size), trust_pickle=trust_pickle, **overrides)
    report = loaded.report
    summary = {
        "format": loaded.source_format,
        "config": loaded.model.config.to_dict(),
        "assumed": loaded.assumed,
        "missing": report.missing,
        "unexpected": report.unexpected,
        "dropped": report.dropped,
        "written": [str(f) for f in files],
    }
    if as_json:
        echo_json(summary)
        return
    description = FORMATS[loaded.source_format].description if loaded.source_format in FORMATS else "vitkit directory"
    typer.echo(f"format: {loaded.source_format} ({description})")
    typer.echo("config: " + json.dumps(summary["config"]))
    for name, why in loaded.assumed.items():
        typer.echo(f"assumed: {name} = {why}")
    typer.echo(f"keys: {report.summary()}")
    for line in report.dropped:
        typer.echo(f"dropped: {line}")
    for path in files:
        typer.echo(f"wrote: {path}")
