"""Evaluation (loss, top-1/top-5, per-class accuracy, confusion matrix) and top-k prediction."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..runtime import DistEnv, all_sum


@dataclass
class EvalResult:
    """Aggregates over the whole evaluation set (all processes)."""

    loss: float
    top1: float
    top5: float
    count: int
    confusion: torch.Tensor = field(repr=False)  # (C, C): rows true class, columns predicted

    @property
    def per_class(self) -> list[float]:
        """Recall of each class (its diagonal share of its row)."""
        totals = self.confusion.sum(dim=1).clamp(min=1)
        return (self.confusion.diag() / totals).tolist()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, num_classes: int, env: DistEnv,
             autocast: contextlib.AbstractContextManager | None = None, inputs: torch.dtype | None = None
             ) -> EvalResult:
    """Run `model` over `loader` (this process's shard, each batch cast to `inputs`, under `autocast`) and reduce
    the counts over processes."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64)
    top1 = torch.zeros((), dtype=torch.float64)
    top5 = torch.zeros((), dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    k = min(5, num_classes)
    for images, labels in loader:
        images, labels = images.to(env.device, inputs), labels.to(env.device)
        with autocast or contextlib.nullcontext():
            logits = model(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        best = logits.topk(k, dim=1).indices  # (B, k)
        top1 += (best[:, 0] == labels).sum().item()
        top5 += (best == labels[:, None]).any(dim=1).sum().item()
        count += len(labels)
        confusion.index_put_((labels.cpu(), best[:, 0].cpu()), torch.ones(len(labels), dtype=torch.float64),
                             accumulate=True)
    totals = all_sum(torch.stack([loss_sum, top1, top5, count]), env)
    confusion = all_sum(confusion, env)
    model.train(was_training)
    n = max(totals[3].item(), 1.0)
    return EvalResult(totals[0].item() / n, totals[1].item() / n, totals[2].item() / n, int(totals[3].item()),
                      confusion.long())


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, top_k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, class indices), each (B, k), best first."""
    model.eval()
    probs = model(images).float().softmax(dim=-1)
    return probs.topk(min(top_k, probs.shape[-1]), dim=-1)
