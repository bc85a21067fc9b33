"""Activations by name, so configs stay plain JSON: gelu, gelu_tanh, quick_gelu, silu, relu."""

from __future__ import annotations

import functools

import torch
from torch import nn


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_tanh": functools.partial(nn.GELU, approximate="tanh"),
    "quick_gelu": QuickGELU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
}


def activation_name(act: object) -> str:
    """The registered name of an activation given as a name, a class, or a partial of nn.GELU."""
    if isinstance(act, str):
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown act_layer {act!r}; choose one of: {', '.join(ACTIVATIONS)}")
        return act
    if isinstance(act, functools.partial) and act.func is nn.GELU:
        return "gelu_tanh" if act.keywords.get("approximate") == "tanh" else "gelu"
    for name, layer in ACTIVATIONS.items():
        if act is layer:
            return name
    raise ValueError(f"act_layer {act!r} is not one vitkit can name; pass one of: {', '.join(ACTIVATIONS)}")


def create_activation(name: str) -> nn.Module:
    return ACTIVATIONS[activation_name(name)]()
