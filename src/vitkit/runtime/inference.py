"""Inference precisions by name: how a model's weights are stored, what its batches are cast to, and what runs
under autocast. Training's mixed precision is `precision.py`'s; this table is for eval, predict, embed and bench.

'bf16' keeps the weights themselves in bf16 (no cast per call, half the memory traffic); the kernels that need
fp32 (LayerNorm / RMSNorm statistics, softmax, the RoPE angles) compute it inside. 'int8' quantizes every
`nn.Linear` dynamically (int8 weights, activations quantized per batch), PyTorch's own x86 int8 path; it runs
on CPU only.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .precision import native_bf16


@dataclass(frozen=True)
class InferencePrecision:
    """One way to run a model for inference; `prepare` once, then each batch `.to(inputs)` under `context`."""

    name: str
    weights: torch.dtype | None  # the dtype the weights are stored in; None: int8-quantized linear layers
    inputs: torch.dtype  # what a batch of images is cast to
    compute: torch.dtype  # what the matrix products run in (the GEMM rate a benchmark compares with)
    autocast: bool  # fp32 weights, cast per call by torch.autocast to `compute`
    training: str | None  # the training precision (autocast, fp32 master weights) nearest to it; None: inference only
    about: str

    def prepare(self, model: nn.Module, device: torch.device, *, inplace: bool = True) -> nn.Module:
        """`model` ready to run at this precision on `device`: cast as `nn.Module.to` does (in place, or with
        `inplace=False` a cast copy whenever anything changes), or for int8 a quantized copy. ValueError where the
        precision cannot run."""
        if self.weights is None:
            if device.type != "cpu":
                raise ValueError(f"--precision {self.name} runs on CPU only (PyTorch's x86 int8 kernels); "
                                 f"use bf16 or fp16 on {device.type}")
            return quantize_int8(model)
        if not inplace and any(t.dtype != self.weights or t.device != device for t in model.parameters()):
            model = copy.deepcopy(model)
        return model.to(device=device, dtype=self.weights)

    def context(self, device: torch.device) -> contextlib.AbstractContextManager:
        """torch.autocast for the autocast precisions; nothing for the others."""
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.compute)


def _precision(name: str, weights: torch.dtype | None, compute: torch.dtype, autocast: bool = False, *,
               training: str | None, about: str) -> InferencePrecision:
    inputs = torch.float32 if autocast or weights is None else weights
    return InferencePrecision(name, weights, inputs, compute, autocast, training, about)


INFERENCE_PRECISIONS: dict[str, InferencePrecision] = {p.name: p for p in (
    _precision("fp32", torch.float32, torch.float32, training="fp32", about="exact: fp32 weights and arithmetic"),
    _precision("bf16", torch.bfloat16, torch.bfloat16, training="bf16",
               about="weights and activations in bf16; norm statistics, softmax and RoPE angles in fp32"),
    _precision("fp16", torch.float16, torch.float16, training="fp16",
               about="weights and activations in fp16; norm statistics and softmax in fp32"),
    _precision("bf16-autocast", torch.float32, torch.bfloat16, autocast=True, training="bf16",
               about="torch.autocast to bf16 over fp32 weights (training's mixed precision)"),
    _precision("fp16-autocast", torch.float32, torch.float16, autocast=True, training="fp16",
               about="torch.autocast to fp16 over fp32 weights"),
    _precision("int8", None, torch.float32, training=None,
               about="linear layers int8 (dynamic quantization, CPU); the rest fp32"),
)}


def inference_precision(name: str, device: torch.device) -> tuple[InferencePrecision, str]:
    """The precision `name` names, and why: 'auto' is bf16 where `device` multiplies bf16 matrices natively (AMX or
    AVX512-BF16 on CPU, compute capability 8.0+ on CUDA) and fp32 elsewhere. ValueError naming the choices."""
    if name == "auto":
        native, why = native_bf16(device)
        return INFERENCE_PRECISIONS["bf16" if native else "fp32"], f"auto: {why}"
    if name not in INFERENCE_PRECISIONS:
        raise ValueError(f"--precision must be auto or one of {', '.join(INFERENCE_PRECISIONS)}, got {name!r}")
    return INFERENCE_PRECISIONS[name], "as asked"


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` whose `nn.Linear` layers hold int8 weights and quantize their input per batch (PyTorch's
    dynamic quantization, fbgemm / oneDNN x86 kernels); patch embedding, norms and attention stay fp32."""
    model = _folded_copy(model)
    with warnings.catch_warnings():  # torch.ao.quantization warns that it moves to torchao; torch 2.14 still ships it
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


def _folded_copy(model: nn.Module) -> nn.Module:
    """A float32 copy in which every layer that reads its linear weights directly (a masked qkv bias) has folded
    that into a plain call, so a quantized linear layer can stand in for it."""
    model = copy.deepcopy(model).float()
    for module in model.modules():
        fold = getattr(module, "fold_for_inference", None)
        if callable(fold):
            fold()
    return model


def prepare_inference(model: nn.Module, precision: str, device: torch.device
                      ) -> tuple[nn.Module, InferencePrecision, str]:
    """`model` in eval mode, ready at `precision` ('auto' or a name of INFERENCE_PRECISIONS) on `device`, the precision
    it resolved to and why (the line a command prints first)."""
    chosen, why = inference_precision(precision, device)
    return chosen.prepare(model.eval(), device), chosen, why
