"""`torch.export` programs (.pt2): a graph that runs without the vitkit source, saved atomically, reloaded and
checked against the PyTorch model before the export counts as done."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..runtime import atomic_path
from .onnx import ExportResult
from .parity import (
    DEFAULT_ATOL,
    DEFAULT_BATCH_SIZES,
    ParityCheck,
    check_float32,
    check_parity,
    evaluating,
    example_images,
    export_attention,
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


def validate_program(
    program: torch.export.ExportedProgram | str | os.PathLike,
    model: nn.Module,
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    atol: float = DEFAULT_ATOL,
    backend: str = "sdpa",
    seed: int = 0,
) -> ParityCheck:
    """The program's output (a path is loaded first) against `model`'s on seeded random images per batch size."""
    if not isinstance(program, torch.export.ExportedProgram):
        program = load_program(program)
    module = program.module()

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(images)

    return check_parity(run, model, runtime="torch.export program", batch_sizes=batch_sizes, atol=atol,
                        backend=backend, seed=seed)


def export_program(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = True,
    batch_size: int = 1,
    attention: str = "sdpa",
    atol: float = DEFAULT_ATOL,
) -> ExportResult:
    """`torch.export` `model` (float32; traced in eval mode, its mode restored after) to a .pt2 file, reload it
    and check it against PyTorch.

    Batch handling, `attention` and the check are as in `export_onnx`; a failing check raises ValueError and
    leaves nothing at `path`.
    """
    check_float32(model)
    path = Path(path)
    if path.suffix != PROGRAM_SUFFIX:
        raise ValueError(f"the torch.export output path must end in {PROGRAM_SUFFIX}, got {path}")
    example = example_images(model, 2 if dynamic_batch else batch_size)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
    with evaluating(model), export_attention(model, attention), torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.export.save(program, f)
        sizes = DEFAULT_BATCH_SIZES if dynamic_batch else (batch_size, batch_size)
        check = validate_program(tmp, model, batch_sizes=sizes, atol=atol, backend=attention)  # the file, reloaded
        if not check.passed:
            raise ValueError(f"the torch.export program {path.name} does not match PyTorch: {check.describe()}; "
                             "nothing was written (try --attention math)")
    return ExportResult(path, (path,), check)
