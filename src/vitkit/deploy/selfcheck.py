"""Live checks for `vitkit doctor`: does torch.compile work on this machine, and does a ViT export to ONNX and
run in onnxruntime? Each one really runs, on a tiny input, and reports the reason when it fails."""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..runtime import without_log_message

# torch.utils.cpp_extension says this (through torch's logging) when first imported, by inductor or the exporter, on
# a machine with a CUDA toolkit but no CUDA device; a CPU compile does not use CUDA_HOME, and doctor's device table
# already reports that no CUDA device is visible.
_CUDA_HOME_NOTICE = "No CUDA runtime is found, using CUDA_HOME="


@dataclass(frozen=True)
class LiveCheck:
    """One check's verdict: `detail` says what ran (when it works) or why not (when it fails)."""

    name: str
    ok: bool
    detail: str
    seconds: float


def without_cuda_home_notice() -> contextlib.AbstractContextManager[None]:
    """Drop torch's 'No CUDA runtime is found, using CUDA_HOME=...' notice while the block runs; every other
    message of that logger still shows."""
    return without_log_message("torch.utils.cpp_extension", _CUDA_HOME_NOTICE)


def _reason(err: BaseException) -> str:
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def check_torch_compile(device: str | torch.device | None = None) -> LiveCheck:
    """Compile a small function with the default (inductor) backend on `device` (the first GPU, else the CPU),
    run it and compare with eager."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    start = time.perf_counter()

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x) * 2.0 + x.sin()

    try:
        x = torch.randn(64, device=device)
        with without_cuda_home_notice():
            got = torch.compile(fn)(x)
        if not torch.allclose(got, fn(x), atol=1e-5):
            raise ValueError("compiled result differs from eager")
    except Exception as err:  # any failure is the answer: no compiler, no triton, an inductor bug ...
        return LiveCheck("torch.compile", False, f"fails on {device}: {_reason(err)}", time.perf_counter() - start)
    return LiveCheck("torch.compile", True, f"works (inductor on {device.type})", time.perf_counter() - start)


def check_onnx_export() -> LiveCheck:
    """Export a tiny ViT with `export_onnx` (dynamo exporter, dynamic batch) and check it in onnxruntime."""
    start = time.perf_counter()
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        return LiveCheck("onnx export", False, f"needs {', '.join(missing)}: pip install 'vitkit[export]'", 0.0)
    from ..models import VisionTransformer
    from .onnx import export_onnx

    try:
        model = VisionTransformer(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2, num_classes=3)
        with tempfile.TemporaryDirectory(prefix="vitkit-doctor-") as tmp, without_cuda_home_notice():
            result = export_onnx(model, Path(tmp) / "tiny.onnx")
    except Exception as err:  # the exporter and onnxruntime raise many types; each one is the answer
        return LiveCheck("onnx export", False, f"fails: {_reason(err)}", time.perf_counter() - start)
    worst = max(result.check.max_abs_diff)
    return LiveCheck("onnx export", True, f"works (dynamo exporter; {result.check.runtime} matches PyTorch to "
                     f"{worst:.1e})", time.perf_counter() - start)
