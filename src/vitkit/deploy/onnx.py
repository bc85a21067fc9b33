"""ONNX export through PyTorch's torch.export-based (dynamo) exporter, checked with onnxruntime before it lands.

The dynamo exporter is the one used: it lowers SDPA to MatMul/Softmax (opset >= 23: ONNX's own `Attention`
op) and GELU to `Gelu`, with the batch axis symbolic, whereas the legacy TorchScript tracer bakes the model's
shape checks in as constants. The file (and its external-data file, for models over 2 GB) is written in a
temporary directory beside the target, validated there, and only then renamed into place.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..choices import DEFAULT_OPSET
from .parity import (
    DEFAULT_ATOL,
    ExportResult,
    ParityCheck,
    check_parity,
    export_checked,
    output_name,
)

MIN_OPSET = 17  # below 18 the exporter converts down from 18 (LayerNormalization needs 17)
INPUT_NAME = "images"


def _require(module: str, why: str):
    """Import an optional export dependency or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{why} needs the {module} package: pip install 'vitkit[export]'") from err


def onnx_session(path: str | os.PathLike):
    """An onnxruntime CPU session for `path` (external data is read from beside it)."""
    ort = _require("onnxruntime", "running an ONNX model")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def validate_onnx(path: str | os.PathLike, model: nn.Module, **check: Any) -> ParityCheck:
    """onnxruntime's output for `path` against `model`'s on seeded random images at each batch size; `check`:
    `check_parity`'s options (batch_sizes, atol, backend, seed)."""
    ort = _require("onnxruntime", "validating an ONNX export")
    session = onnx_session(path)
    input_name = session.get_inputs()[0].name

    def run(images: torch.Tensor) -> np.ndarray:
        return session.run(None, {input_name: images.detach().cpu().numpy()})[0]

    return check_parity(run, model, runtime=f"onnxruntime {ort.__version__}", **check)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = True,
    batch_size: int = 1,
    opset: int = DEFAULT_OPSET,
    attention: str = "auto",
    external_data: bool | None = None,
    atol: float = DEFAULT_ATOL,
) -> ExportResult:
    """Export `model` (float32; traced in eval mode, its mode restored after) to ONNX at `path` and check it
    with onnxruntime.

    `dynamic_batch`: the batch axis is symbolic and the check runs batches of 1 and 3; otherwise the graph
    takes exactly `batch_size` images and the check runs two random batches of that size. `attention`: the
    backend traced into the graph (sdpa or math), whatever the model's configured one; it is restored
    after. `external_data`: None embeds the weights unless they pass ONNX's 2 GB limit, True always writes
    them to `<path>.data` beside the model. A check over `atol` raises ValueError and writes nothing.
    """
    _require("onnx", "ONNX export")
    _require("onnxscript", "ONNX export (the dynamo exporter)")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    return export_checked(
        model, path, kind="ONNX", suffix=".onnx", what="ONNX export of", hint="--attention math or another --opset",
        trace=functools.partial(_trace, opset=opset), write=functools.partial(_write, external_data=external_data),
        validate=validate_onnx, dynamic_batch=dynamic_batch, batch_size=batch_size, attention=attention, atol=atol,
    )


def _trace(model: nn.Module, example: torch.Tensor, dynamic_shapes: Any, *, opset: int) -> Any:
    """The dynamo exporter's ONNX program of `model` on `example`."""
    with warnings.catch_warnings():
        # The exporter's own chatter (opset down-conversion notes and the like) is not the user's concern.
        warnings.simplefilter("ignore", UserWarning)
        return torch.onnx.export(
            model, (example,), None, dynamo=True, dynamic_shapes=dynamic_shapes, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[output_name(model)], verbose=False,
        )


def _write(program: Any, path: Path, check: Callable[[Path], ParityCheck], *,
           external_data: bool | None) -> tuple[tuple[Path, ...], ParityCheck]:
    """Save the model (and its external-data file) in a temporary directory beside `path`, check it there, then
    move it into place; a failed check leaves nothing."""
    staging = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    staging.mkdir(parents=True)
    try:
        program.save(staging / path.name, external_data=external_data)
        parity = check(staging / path.name)
        # Data files first, the model file last: a reader never sees a model whose weights are not there yet.
        staged = sorted(staging.iterdir(), key=lambda p: p.name == path.name)
        files = []
        for item in staged:
            os.replace(item, path.parent / item.name)
            files.append(path.parent / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return (files[-1], *files[:-1]), parity
