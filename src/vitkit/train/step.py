"""One optimizer step, a function of its parts so that tests can drive it and watch the optimizer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..packing import PackedBatch

# (images, labels, micro-batch number) -> (mixed images, soft targets (B, C)): the run's mixup/cutmix.
Mix = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def optimizer_step(net: nn.Module, batches: Iterator[tuple[torch.Tensor | PackedBatch, torch.Tensor]],
                   optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
                   scaler: torch.amp.GradScaler, autocast: contextlib.AbstractContextManager, *,
                   grad_accum: int, label_smoothing: float, device: torch.device, mix: Mix | None = None,
                   clip_grad: float | None = None) -> float:
    """One optimizer step over the next `grad_accum` (images or packed batch, labels) micro-batches of `batches`;
    returns their mean loss.

    The micro-batches' gradients add up (each loss divided by `grad_accum`, so the step sees the gradient of
    the mean), the optimizer steps at the schedule's current lr, then the gradients are cleared and the
    schedule advances. Under DDP only the last micro-batch synchronises the gradients across processes.
    `mix` turns each micro-batch into mixed images and soft targets (label smoothing still applies); with
    `clip_grad` the gradients' global norm is clipped to it (after unscaling) before the step.
    """
    total = 0.0
    for micro in range(grad_accum):
        images, labels = next(batches)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if mix is not None:
            images, labels = mix(images, labels, micro)
        sync = micro == grad_accum - 1 or not hasattr(net, "no_sync")
        with contextlib.nullcontext() if sync else net.no_sync(), autocast:
            logits = net(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        scaler.scale(loss / grad_accum).backward()
        total += loss.item() / grad_accum
    if clip_grad is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    schedule.step()
    return total
