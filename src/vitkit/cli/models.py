"""`vitkit models [PATTERN]`: the registered models, their size and input shape."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from .app import app
from .output import echo_json, print_table

if TYPE_CHECKING:
    from ..models.registry import ModelInfo

_GLOB_CHARS = frozenset("*?[")


def _glob(pattern: str | None) -> str | None:
    """A shell pattern for `list_models`; a plain word matches anywhere in the name ('siglip')."""
    if pattern is None or _GLOB_CHARS & set(pattern):
        return pattern
    return f"*{pattern}*"


def _table(infos: list[ModelInfo]) -> Table:
    table = Table(title=f"registered models ({len(infos)})")
    table.add_column("name", no_wrap=True)
    table.add_column("params", justify="right")
    table.add_column("image", justify="right")
    table.add_column("pooling")
    for info in infos:
        height, width = info.img_size
        table.add_row(
            Text(info.name), f"{info.params / 1e6:.1f}M", f"{height}x{width}", Text(info.global_pool),
        )
    return table


@app.command()
def models(
    pattern: str | None = typer.Argument(
        None, metavar="PATTERN", help="Shell-style filter, e.g. 'siglip*'; a plain word matches anywhere in the name."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    markdown: bool = typer.Option(False, "--markdown", help="With --pretrained: a markdown table (README's)."),
    pretrained: bool = typer.Option(
        False, "--pretrained", help="List the published weights (NAME.TAG) instead: repository, layout, license, "
                                    "classes and data config."
    ),
    pretrained_formats: bool = typer.Option(
        False, "--pretrained-formats", help="List the checkpoint formats `load_pretrained` and `convert` read."
    ),
) -> None:
    """List registered models: parameter count, image size and pooling."""
    if pretrained_formats:
        _print_formats(as_json)
        return
    if pretrained:
        _print_tags(pattern, as_json, markdown)
        return
    from ..models.registry import list_models, model_info

    names = list_models(_glob(pattern))
    if not names:
        raise ValueError(f"no registered model matches {pattern!r}; run `vitkit models` to see them all")
    infos = [model_info(name) for name in names]
    if as_json:
        echo_json([dataclasses.asdict(info) for info in infos])
    else:
        print_table(_table(infos))


def _print_tags(pattern: str | None, as_json: bool, markdown: bool) -> None:
    from ..checkpoints.tags import PRETRAINED, list_pretrained, tags_markdown

    names = list_pretrained(_glob(pattern))
    if not names:
        raise ValueError(f"no published weights match {pattern!r}; run `vitkit models --pretrained` to see them all")
    tags = [PRETRAINED[name] for name in names]
    if as_json:
        echo_json([tag.as_dict() for tag in tags])
        return
    if markdown:
        typer.echo(tags_markdown(_glob(pattern)), nl=False)
        return
    table = Table(title=f"published weights ({len(tags)}; vitkit.create_model('NAME.TAG', pretrained=True))")
    for column in ("name", "repository", "layout", "license"):
        table.add_column(column, no_wrap=column in ("name", "repository"))
    for column in ("classes", "size", "crop"):
        table.add_column(column, justify="right")
    table.add_column("mean / std")
    for tag in tags:
        table.add_row(Text(tag.name), Text(tag.repo), tag.layout, tag.license, str(tag.num_classes or "-"),
                      str(tag.img_size), f"{tag.crop_pct:g} {tag.interpolation}", tag.normalisation)
    print_table(table)


def _print_formats(as_json: bool) -> None:
    from ..checkpoints.detect import FORMATS

    rows = [{"name": f.name, "description": f.description} for f in FORMATS.values()]
    if as_json:
        echo_json(rows)
        return
    table = Table(title=f"checkpoint formats vitkit loads ({len(rows)}; --from NAME to force one)")
    table.add_column("format", no_wrap=True)
    table.add_column("what writes it")
    for row in rows:
        table.add_row(Text(row["name"]), Text(row["description"]))
    print_table(table)
