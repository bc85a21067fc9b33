"""Output helpers shared by commands: a rich console for humans, plain JSON for machines."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

ATTENTION_HELP = ("Attention kernel: auto (the fastest that can run here) or a backend `vitkit doctor` lists (math, "
                  "sdpa, flash, xformers, flex, sdpa:<kernel>). Default: auto, or the kernel an older config.json "
                  "names where it can run here.")
PRECISION_HELP = ("auto (bf16 where the machine multiplies bf16 natively: AMX / AVX512-BF16, CUDA 8.0+; else fp32), "
                  "fp32 (exact), bf16 / fp16 (weights and activations), bf16-autocast / fp16-autocast, or int8 "
                  "(linear layers, CPU).")
TRUST_PICKLE_HELP = ("Also load .pt/.pth/.bin pickles that need more than tensors; unpickling runs code from the "
                     "file, so only for files you trust.")


def console() -> Console:
    """A stdout console made per call, so it writes to whatever sys.stdout is now (tests swap it)."""
    return Console(highlight=False)


def echo_json(data: Any) -> None:
    """Print `data` as indented JSON on stdout, untouched by rich (no wrapping, no colour codes)."""
    typer.echo(json.dumps(data, indent=2))


def print_table(table: Table, *, keys: int = 1, out: Console | None = None) -> None:
    """Print `table` without cutting a cell: whole when it fits the console's width (piped output: $COLUMNS, else
    80), where columns that may wrap do; else in parts, each holding the columns that fit beside the first `keys`
    (what names a row), which every part repeats, the caption below them at the full width; and where one column
    does not fit even so, one plain line per row, which the terminal wraps."""
    out = out or console()
    if _fits(out, table):
        out.print(table)
        return
    parts: list[list[int]] = []
    for index in range(keys, len(table.columns)):
        if parts and _fits(out, _columns(table, [*range(keys), *parts[-1], index])):
            parts[-1].append(index)
        elif _fits(out, _columns(table, [*range(keys), index])):
            parts.append([index])
        else:
            parts = []
            break
    if not parts:  # a column too wide for the output beside the keys, or nothing beside them
        _print_plain(out, table)
        return
    for number, part in enumerate(parts):
        piece = _columns(table, [*range(keys), *part])
        piece.title, piece.caption = table.title if number == 0 else None, None
        out.print(piece)
    if table.caption:
        out.print(table.caption, style=table.caption_style or "table.caption", justify=table.caption_justify)


def _fits(out: Console, table: Table) -> bool:
    """Whether `table` fits `out`'s width with every column that may not wrap at its full width (rich would cut
    such a column short to fit; it wraps the others at spaces, and a 'fold' column anywhere)."""
    options = out.options.update_width(1_000_000)
    shrink = 0
    for column in table.columns:
        if not column.no_wrap:
            sizes = [Measurement.get(out, options, cell) for cell in (column.header, *column.cells)]
            narrowest = 1 if column.overflow == "fold" else max(m.minimum for m in sizes)
            shrink += max(m.maximum for m in sizes) - narrowest
    return Measurement.get(out, options, table).maximum - shrink <= out.width


def _columns(table: Table, indexes: list[int]) -> Table:
    """A copy of `table` with only the columns at `indexes` (the rows, title and style shared)."""
    part = copy.copy(table)
    # rich lays a column out by its `_index` (first and last get the edge padding): renumber the ones kept
    part.columns = [dataclasses.replace(table.columns[i], _index=n) for n, i in enumerate(indexes)]
    return part


def _print_plain(out: Console, table: Table) -> None:
    """The table as text: its title, one 'header: value' line per row, its caption; long lines wrap."""
    def plain(cell: Any) -> str:
        return cell.plain if isinstance(cell, Text) else str(cell)

    lines = [plain(table.title)] if table.title else []
    rows = zip(*(column.cells for column in table.columns), strict=True)
    lines += ["  ".join(f"{plain(column.header)}: {plain(cell)}" for column, cell in zip(table.columns, row,
                                                                                        strict=True))
              for row in rows]
    lines += [plain(table.caption)] if table.caption else []
    for line in lines:
        out.print(line, soft_wrap=True, markup=False, highlight=False)


def precision_line(name: str, why: str, *, err: bool = False) -> None:
    """The first line of an inference command: the precision it runs at and why (on stderr under --json)."""
    typer.echo(f"precision {name} ({why})", err=err)
