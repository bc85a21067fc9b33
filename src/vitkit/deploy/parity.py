"""What every export shares: an exportable attention backend for the duration of an export, the model's
input shape and seeded example inputs, the parity check of an exported program against PyTorch, and the
export-and-check steps (`export_checked`) that each format fills in with how it traces, writes and runs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attention import BackendUnavailableError, canonical_name, use
from ..choices import EXPORT_BACKENDS
from ..data import DataConfig

DEFAULT_ATOL = 1e-4
DEFAULT_BATCH_SIZES = (1, 3)


@contextlib.contextmanager
def export_attention(model: nn.Module, backend: str = "auto") -> Iterator[nn.Module]:
    """Run every attention layer of `model` (blocks and MAP head) on `backend` inside the block, whatever the
    backend the model runs (`vitkit.attention.use`); outside it, the model's own backend again."""
    name = canonical_name(backend)
    name = "sdpa" if name == "auto" else name
    if name not in EXPORT_BACKENDS:
        raise ValueError(f"attention backend {backend!r} cannot be exported; use one of {', '.join(EXPORT_BACKENDS)}")
    with use(name):
        yield model


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode inside the block (no dropout, no drop-path), in its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def input_shape(model: nn.Module) -> tuple[int, int, int]:
    """(channels, height, width) of the images a vitkit model takes, from its config."""
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"export needs a vitkit model with a .config, got {type(model).__name__}")
    data = DataConfig.of(config)
    return (data.in_chans, *data.img_size)


def example_images(model: nn.Module, batch_size: int, *, seed: int = 0) -> torch.Tensor:
    """Seeded standard-normal images (batch_size, C, H, W) on the model's device, float32."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, *input_shape(model), generator=gen)
    return images.to(next(model.parameters()).device)


def check_float32(model: nn.Module) -> None:
    """Exports are validated at 1e-4, which only float32 weights can promise."""
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        names = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        raise ValueError(f"export needs a float32 model, this one holds {names}; call model.float() first")


def output_name(model: nn.Module) -> str:
    """'logits' for a classifier, 'features' for a model without a head (or one that ignores it)."""
    has_head = getattr(model, "num_classes", 0) > 0 and not getattr(model, "ignore_head", False)
    return "logits" if has_head else "features"


@dataclass(frozen=True)
class ParityCheck:
    """Exported program vs the PyTorch model on seeded random images, one max |difference| per batch size."""

    runtime: str
    reference: str
    batch_sizes: tuple[int, ...]
    max_abs_diff: tuple[float, ...]
    atol: float

    @property
    def passed(self) -> bool:
        return all(diff <= self.atol for diff in self.max_abs_diff)

    def describe(self) -> str:
        """One line: each batch size's max |diff| against the tolerance, and the verdict; batches of one size (a
        static batch axis is checked on two) are named once: 'batch 1: 2.1e-06, batch 3: ...' or '2 batches of 8:
        2.1e-06, 1.9e-06'."""
        by_size: dict[int, list[str]] = {}
        for size, diff in zip(self.batch_sizes, self.max_abs_diff, strict=True):
            by_size.setdefault(size, []).append(f"{diff:.2e}")
        diffs = ", ".join(f"batch {size}: {found[0]}" if len(found) == 1 else
                          f"{len(found)} batches of {size}: {', '.join(found)}" for size, found in by_size.items())
        verdict = "ok" if self.passed else "FAILED"
        return (f"check: {self.runtime} vs PyTorch ({self.reference}) on random images, max |diff| {diffs} "
                f"(tolerance {self.atol:.0e}): {verdict}")


def _reference(model: nn.Module, images: torch.Tensor, backend: str) -> tuple[torch.Tensor, str]:
    """The model's own output, on its configured attention when that runs here, else on the export backend."""
    configured = model.attention_backend
    with torch.no_grad():
        try:
            return model(images), f"attention {configured}"
        except BackendUnavailableError:
            with export_attention(model, backend):
                return model(images), f"attention {backend}, as {configured} cannot run here"


def check_parity(
    run: Callable[[torch.Tensor], torch.Tensor | np.ndarray],
    model: nn.Module,
    *,
    runtime: str,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    atol: float = DEFAULT_ATOL,
    backend: str = "sdpa",
    seed: int = 0,
) -> ParityCheck:
    """Compare `run(images)` (an exported program) with `model(images)` on a fresh seeded batch per size."""
    diffs, reference = [], ""
    for index, batch in enumerate(batch_sizes):
        images = example_images(model, batch, seed=seed + 1 + index)
        with evaluating(model):
            expected, reference = _reference(model, images, backend)
        with torch.no_grad():
            out = run(images)
        got = out if isinstance(out, torch.Tensor) else torch.from_numpy(np.asarray(out))
        if tuple(got.shape) != tuple(expected.shape):
            raise ValueError(f"{runtime} returned shape {tuple(got.shape)} for batch {batch}, PyTorch "
                             f"{tuple(expected.shape)}")
        diffs.append((got.detach().cpu().float() - expected.detach().cpu().float()).abs().max().item())
    return ParityCheck(runtime, reference, tuple(batch_sizes), tuple(diffs), atol)


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and how it compared with PyTorch."""

    path: Path
    files: tuple[Path, ...]  # the model file, then any external-data file
    check: ParityCheck


# trace(model, example, dynamic_shapes) -> what the exporter made; run under eval mode, the export attention, no_grad
Trace = Callable[[nn.Module, torch.Tensor, Any], Any]
# validate(staged file, model, batch_sizes=, atol=, backend=) -> the parity check of the file as written
Validate = Callable[..., ParityCheck]
# write(exported, path, check) -> (the files in place, model file first; check's result): stage beside `path`, call
# check(staged model file), which raises when the export does not match, and only then move the files into place
Write = Callable[[Any, Path, Callable[[Path], ParityCheck]], tuple[tuple[Path, ...], ParityCheck]]


def export_checked(model: nn.Module, path: str | os.PathLike, *, kind: str, suffix: str, what: str, hint: str,
                   trace: Trace, write: Write, validate: Validate, dynamic_batch: bool, batch_size: int,
                   attention: str, atol: float) -> ExportResult:
    """The steps every export takes: refuse a non-float32 model or a wrong suffix, trace on example images (the
    batch axis symbolic with `dynamic_batch`), stage the file and check it at two batch sizes, then let it land.

    `kind` and `what` name the format in errors ("the {kind} output path ...", "the {what} {file} does not match
    PyTorch"), `hint` says what to try when the check fails.
    """
    check_float32(model)
    path = Path(path)
    if path.suffix != suffix:
        raise ValueError(f"the {kind} output path must end in {suffix}, got {path}")
    example = example_images(model, 2 if dynamic_batch else batch_size)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
    with evaluating(model), export_attention(model, attention), torch.no_grad():
        exported = trace(model, example, dynamic_shapes)
    sizes = DEFAULT_BATCH_SIZES if dynamic_batch else (batch_size, batch_size)

    def check(staged: Path) -> ParityCheck:
        parity = validate(staged, model, batch_sizes=sizes, atol=atol, backend=attention)
        if not parity.passed:
            raise ValueError(f"the {what} {path.name} does not match PyTorch: {parity.describe()}; nothing was "
                             f"written (try {hint})")
        return parity

    files, parity = write(exported, path, check)
    return ExportResult(path, files, parity)
