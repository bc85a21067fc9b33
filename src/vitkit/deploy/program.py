"""`torch.export` programs (.pt2): a graph that runs without the vitkit source, saved atomically, reloaded and
checked against the PyTorch model before the export counts as done."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..runtime import atomic_path
from .parity import (
    DEFAULT_ATOL,
    ExportResult,
    ParityCheck,
    check_parity,
    export_checked,
)

PROGRAM_SUFFIX = ".pt2"


def load_program(path: str | os.PathLike) -> torch.export.ExportedProgram:
    """A program written by `export_program` (or any `torch.export.save`); FileNotFoundError if absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported program at {path}")
    try:
        with open(path, "rb") as f:  # a file object: torch.export judges a path by its suffix; temp names lack .pt2
            return torch.export.load(f)
    except (RuntimeError, ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable torch.export program (.pt2): {err}") from err


def validate_program(program: torch.export.ExportedProgram | str | os.PathLike, model: nn.Module,
                     **check: Any) -> ParityCheck:
    """The program's output (a path is loaded first) against `model`'s on seeded random images per batch size;
    `check`: `check_parity`'s options (batch_sizes, atol, backend, seed)."""
    if not isinstance(program, torch.export.ExportedProgram):
        program = load_program(program)
    module = program.module()

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(images)

    return check_parity(run, model, runtime="torch.export program", **check)


def export_program(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = True,
    batch_size: int = 1,
    attention: str = "auto",
    atol: float = DEFAULT_ATOL,
) -> ExportResult:
    """`torch.export` `model` (float32; traced in eval mode, its mode restored after) to a .pt2 file, reload it
    and check it against PyTorch.

    Batch handling, `attention` and the check are as in `export_onnx`; a failing check raises ValueError and
    leaves nothing at `path`.
    """
    return export_checked(
        model, path, kind="torch.export", suffix=PROGRAM_SUFFIX, what="torch.export program",
        hint="--attention math", trace=_trace, write=_write, validate=validate_program, dynamic_batch=dynamic_batch,
        batch_size=batch_size, attention=attention, atol=atol,
    )


def _trace(model: nn.Module, example: torch.Tensor, dynamic_shapes: Any) -> torch.export.ExportedProgram:
    """`torch.export`'s program of `model` on `example`."""
    return torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)


def _write(program: torch.export.ExportedProgram, path: Path,
           check: Callable[[Path], ParityCheck]) -> tuple[tuple[Path, ...], ParityCheck]:
    """Save the program atomically: the check reloads the temporary file, and only a passing one is renamed."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.export.save(program, f)
        parity = check(tmp)
    return (path,), parity
