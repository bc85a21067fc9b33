"""`vitkit attention-map --checkpoint DIR IMAGE`: where the model looks, as a heatmap over the image (PNG)."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .convert import parse_size
from .output import ATTENTION_HELP, echo_json


@app.command("attention-map")
def attention_map_command(
    image: Path = typer.Argument(..., help="An image file (any format PIL reads)."),
    checkpoint: Path = typer.Option(..., help="A vitkit model (or run) directory: config.json + model.safetensors; or "
                                                     "published weights NAME.TAG."),
    method: str = typer.Option("rollout", "--method", help="rollout (all layers, Abnar & Zuidema) or last "
                               "(the last layer's class-token row, or the MAP head's latent query)."),
    out: Path | None = typer.Option(None, "--out", help="PNG to write (default: IMAGE's name + _attention.png, "
                                    "in the current directory)."),
    size: str | None = typer.Option(None, "--size", help="Picture size N or HxW (default: the image's own; "
                                    "e.g. 256 makes an 8x8 digit readable)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Heatmap opacity over the image, 0 to 1."),
    colormap: str = typer.Option("jet", "--colormap", help="A matplotlib colormap name."),
    with_image: bool = typer.Option(False, "--with-image", help="The plain image on the left of the map."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    attention: str | None = typer.Option(None, "--attention", help=ATTENTION_HELP + " The map itself always comes "
                                         "from the math path.", show_default=False),
) -> None:
    """Attention rollout (or the last layer's attention) of a model on an image, overlaid as a heatmap PNG."""
    from ..checkpoints import load_model_dir
    from ..explain import METHODS, attention_map
    from ..train import RunDir

    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if not image.is_file():
        raise FileNotFoundError(f"image not found: {image}")
    picture_size = parse_size(size, "--size")
    if isinstance(picture_size, int):
        picture_size = (picture_size, picture_size)
    model = load_model_dir(checkpoint, argument="--checkpoint", attention=attention)
    out = out or Path(f"{image.stem}_attention.png")
    result = attention_map(model, image, out, method=method, size=picture_size, alpha=alpha, colormap=colormap,
                           with_image=with_image)
    labels = RunDir(checkpoint).labels()
    label = None
    if result.top_class is not None:
        label = labels[result.top_class] if result.top_class < len(labels) else str(result.top_class)
    if as_json:
        echo_json({"path": str(result.path), "method": method, "grid": list(result.heat.shape),
                   "heat": result.heat.tolist(), "label": label, "probability": result.probability})
        return
    typer.echo(f"wrote: {result.path} ({method}, {result.heat.shape[0]}x{result.heat.shape[1]} patches)")
    if label is not None:
        typer.echo(f"predicted: {label} ({result.probability:.3f})")
