"""One optimizer step, a function of its parts so that tests can drive it and watch the optimizer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..packing import PackedBatch


def optimizer_step(net: nn.Module, batches: Iterator[tuple[torch.Tensor | PackedBatch, torch.Tensor]],
                   optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
                   scaler: torch.amp.GradScaler, autocast: contextlib.AbstractContextManager, *,
                   grad_accum: int, label_smoothing: float, device: torch.device) -> float:
    """One optimizer step over the next `grad_accum` (images or packed batch, labels) micro-batches of `batches`;
    returns their mean loss.

    The micro-batches' gradients add up (each loss divided by `grad_accum`, so the step sees the gradient of
    the mean), the optimizer steps at the schedule's current lr, then the gradients are cleared and the
    schedule advances. Under DDP only the last micro-batch synchronises the gradients across processes.
    """
    total = 0.0
    for micro in range(grad_accum):
        images, labels = next(batches)
        images, labels = images.to(device), labels.to(device)
        sync = micro == grad_accum - 1 or not hasattr(net, "no_sync")
        with contextlib.nullcontext() if sync else net.no_sync(), autocast:
            logits = net(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        scaler.scale(loss / grad_accum).backward()
        total += loss.item() / grad_accum
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    schedule.step()
    return total
