"""An exponential moving average of a model's weights (timm's `--model-ema`, as its ModelEmaV3 without warm-up)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """A frozen copy of `model` whose floating-point weights follow it after each optimizer step:
    ema <- decay * ema + (1 - decay) * weights, for every floating-point tensor of its state dict (a buffer that
    never changes, such as a fixed sin-cos table, stays what it is)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--model-ema-decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        mine = [p for p in self.module.state_dict().values() if p.is_floating_point()]
        theirs = [p.detach() for p in model.state_dict().values() if p.is_floating_point()]
        torch._foreach_lerp_(mine, theirs, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
