"""Models out of PyTorch for serving: ONNX (checked with onnxruntime) and torch.export programs (.pt2), each
validated against the PyTorch model at two batch sizes before the file lands."""

from .onnx import DEFAULT_OPSET, export_onnx, onnx_session, validate_onnx
from .parity import (
    EXPORT_BACKENDS,
    ExportResult,
    ParityCheck,
    check_parity,
    example_images,
    export_attention,
    input_shape,
)
from .program import export_program, load_program, validate_program

__all__ = [
    "DEFAULT_OPSET",
    "EXPORT_BACKENDS",
    "ExportResult",
    "ParityCheck",
    "check_parity",
    "example_images",
    "export_attention",
    "export_onnx",
    "export_program",
    "input_shape",
    "load_program",
    "onnx_session",
    "validate_onnx",
    "validate_program",
]
