"""`python -m vitkit.bench.worker`: time ONE candidate in this process; a JSON spec on stdin, the result on stdout.

Each candidate gets a fresh process so that its imports, allocator state and peak memory are its own.
Whatever the libraries print goes to stderr; stdout carries only the result. Modes run in the order
infer, then train, so the process's peak memory read after each is that mode's (training needs more).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import BackendUnavailableError
from ..models import ViTConfig, config_from_dict
from ..runtime import INFERENCE_PRECISIONS, autocast
from .candidates import PEERS, Built, Unsupported, build_vitkit, compute_dtype, image_shape, vitkit_attention
from .ceiling import measure_ceiling
from .flops import block_gemms, counted_flops, flop_counter
from .measure import (
    MIB,
    current_memory_mb,
    peak_memory_mb,
    reset_peak_memory,
    resolve_device,
    tensor_memory,
    time_steps,
)
from .spec import MODES, CandidateSpec


def make_batch(config: ViTConfig, batch_size: int, seed: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The same images and labels for every candidate: drawn from their own generator, on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn((batch_size, *image_shape(config)), generator=generator)
    labels = torch.randint(0, max(config.num_classes, 1), (batch_size,), generator=generator)
    return images.to(device), labels.to(device)


def _loss(output: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cross-entropy on random labels for a classifier; the mean square of the features for a headless model."""
    if num_classes and output.shape == (labels.shape[0], num_classes):
        return F.cross_entropy(output.float(), labels)
    return output.float().square().mean()


def _infer_step(model: nn.Module, images: torch.Tensor, device: torch.device, precision: str) -> Callable[[], None]:
    """One forward at the inference precision `precision` (the model already prepared for it)."""
    chosen = INFERENCE_PRECISIONS[precision]
    images = images.to(chosen.inputs)

    def step() -> None:
        with torch.inference_mode(), chosen.context(device):
            model(images)

    return step


def _train_step(model: nn.Module, params: list[nn.Parameter], batch: tuple[torch.Tensor, ...], num_classes: int,
                device: torch.device, precision: str) -> tuple[Callable[[], None], torch.optim.Optimizer]:
    """Forward, backward and an AdamW step (loss-scaled for fp16 on CUDA, as mixed-precision training is), under
    the autocast precision training has for the inference precision `precision`."""
    images, labels = batch
    precision = INFERENCE_PRECISIONS[precision].training
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16" and device.type == "cuda")

    def step() -> None:
        with autocast(device, precision):
            loss = _loss(model(images), labels, num_classes)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step, optimizer


def _tensor_peak_mb(step: Callable[[], None], model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    batch: tuple[torch.Tensor, ...], device: torch.device) -> float | None:
    """The most memory tensors hold during one more step: the resident ones (weights, optimizer state, the
    batch) plus the peak of what the step creates. Comparable between CPU and CUDA, unlike the process's
    resident set, which also keeps whatever the C allocator holds on to."""
    resident = [*model.parameters(), *model.buffers(), *batch]
    if optimizer is not None:
        resident += [t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
    sizes = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in resident}
    try:
        with tensor_memory(device) as added:
            step()
    except RuntimeError:  # kernels the CPU counter cannot trace (compiled flex attention)
        return None
    return sum(sizes.values()) / MIB + added()


def _attention_note(spec: CandidateSpec, config: ViTConfig, device: torch.device, mode: str) -> str:
    """Which kernel `auto` runs; raises Unsupported when a named backend cannot run this mode here."""
    kernel = vitkit_attention(config, spec.attention, device, compute_dtype(spec.precision, mode), mode == "train")
    return f"attention auto -> {kernel}" if spec.attention == "auto" else ""


def _freezing(enabled: bool) -> contextlib.AbstractContextManager:
    """Inductor's freezing for compiled inference: the weights become constants of the graph, folded and (on CPU)
    prepacked once for oneDNN instead of reordered on every call."""
    if not enabled:
        return contextlib.nullcontext()
    import torch._inductor.config

    return torch._inductor.config.patch(freezing=True)


def _measure(spec: CandidateSpec, built: Built, config: ViTConfig, mode: str, device: torch.device,
             batch: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    train = mode == "train"
    model = built.model
    notes = [_attention_note(spec, config, device, mode) if spec.candidate == "vitkit" else built.notes]
    flops = None
    if built.in_torch:
        try:  # eagerly, before any compilation; a cross-check only, so a kernel the counter cannot trace is fine
            flops = counted_flops(model, batch[0][:1], train)
        except Exception as err:
            notes.append(f"FLOPs not countable ({type(err).__name__})")
        model.zero_grad(set_to_none=True)
        model.train(train)
        if not train:  # the weights as the precision keeps them: a cast copy when training follows
            model = INFERENCE_PRECISIONS[spec.precision].prepare(model, device, inplace=mode == spec.modes[-1])
    compiled = spec.compile and built.in_torch
    if spec.compile and not compiled:
        notes.append("not compiled (torch.compile takes torch models)")
    runner = torch.compile(model) if compiled else model
    if train:
        params = [p for p in model.parameters() if p.requires_grad]
        step, optimizer = _train_step(runner, params, batch, config.num_classes, device, spec.precision)
    else:
        step, optimizer = _infer_step(runner, batch[0], device, spec.precision), None
    reset_peak_memory(device)
    with _freezing(compiled and not train):
        seconds = time_steps(step, device, spec.warmup, spec.steps)
    peak = peak_memory_mb(device)
    # One more step, counting tensors (slower, so untimed); compiled graphs cannot run under the counter, and
    # another runtime's tensors are not torch's.
    tensors = None if compiled or not built.in_torch else _tensor_peak_mb(step, model, optimizer, batch, device)
    if tensors is None:
        why = ("a compiled graph" if compiled else "a runtime outside torch" if not built.in_torch
               else "a kernel the counter cannot trace")
        notes.append(f"tensor memory not measured ({why})")
    # The ceiling right here, right now: same process, threads and machine load as the steps just timed.
    gemms = block_gemms(config, spec.batch_size, train)
    ceiling = measure_ceiling(gemms, device, compute_dtype(spec.precision, mode), reps=spec.steps)
    return {"status": "ok", "notes": "; ".join(filter(None, notes)), "step_s": seconds, "peak_mem_mb": peak,
            "tensor_mem_mb": tensors, "flops_counted": flops, "ceiling_gflops_per_s": ceiling.gflops_per_s}


def _import(candidate: str) -> None:
    """Import the candidate's library, and what the FLOP counter loads on first use (~800 modules of
    torch), up front: the memory baseline must include them, or the lighter libraries look heavier."""
    with flop_counter():
        nn.Linear(1, 1)(torch.ones(1, 1))
    if candidate in PEERS:
        peer = PEERS[candidate]
        try:
            importlib.import_module(peer.module)
        except ImportError as err:
            raise Unsupported(f"{peer.dist} cannot be imported here ({err}); fix: pip install {peer.dist}") from err


def _build(spec: CandidateSpec, config: ViTConfig, device: torch.device) -> tuple[Built, float | None]:
    """Check, import, read the memory baseline, build: (the candidate, the baseline in MiB)."""
    if spec.candidate != "vitkit":
        PEERS[spec.candidate].check(config, spec)
    _import(spec.candidate)
    base = current_memory_mb(device)
    if spec.candidate == "vitkit":
        return build_vitkit(config, device, spec.attention, spec.grad_checkpointing), base
    return PEERS[spec.candidate].build(config, device, spec), base


def _failure(err: BaseException) -> dict[str, str]:
    if isinstance(err, Unsupported | BackendUnavailableError):
        return {"status": "skipped", "reason": str(err)}
    if isinstance(err, torch.OutOfMemoryError):
        return {"status": "failed", "reason": "out of memory"}
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return {"status": "failed", "reason": f"{type(err).__name__}: {first}"}


def run_candidate(spec: CandidateSpec) -> dict[str, Any]:
    """Build the candidate and time each of its modes; never raises for a candidate that cannot run.

    Returns {'library', 'params', 'modes': {mode: {'status': 'ok', 'step_s', 'peak_mem_mb', 'flops_counted',
    'notes'} or {'status': 'skipped' | 'failed', 'reason'}}}.
    """
    device = resolve_device(spec.device)
    config = config_from_dict(spec.config)
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    try:
        built, base = _build(spec, config, device)
    except Exception as err:  # a peer that cannot build is a row, never a crash
        return {"library": spec.candidate, "params": None, "modes": {mode: _failure(err) for mode in spec.modes}}
    batch = make_batch(config, spec.batch_size, spec.seed, device)
    results = {}
    for mode in sorted(spec.modes, key=MODES.index):
        try:
            measured = _measure(spec, built, config, mode, device, batch)
            if measured.get("peak_mem_mb") is not None:  # two readings of one high-water mark: never below the base
                measured["peak_mem_mb"] = max(measured["peak_mem_mb"], base)
            results[mode] = {**measured, "base_mem_mb": base}
        except Exception as err:
            results[mode] = _failure(err)
    params = built.params if built.params is not None else sum(p.numel() for p in built.model.parameters())
    return {"library": built.library, "params": params, "modes": results}


def main() -> None:
    spec = CandidateSpec.from_dict(json.loads(sys.stdin.read()))
    result_fd = os.dup(1)
    os.dup2(2, 1)  # from here on, anything printed (by Python or C code) goes to stderr
    result = run_candidate(spec)
    sys.stdout.flush()
    with os.fdopen(result_fd, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
