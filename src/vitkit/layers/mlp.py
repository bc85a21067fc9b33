"""Feed-forward layers: the classic two-layer MLP and the gated SwiGLU variants (timm state-dict names)."""

from __future__ import annotations

import torch
from torch import nn

from .activations import create_activation


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: object = "gelu",
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = create_activation(act_layer, inplace=True)  # on fc1's fresh output
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class SwiGLU(nn.Module):
    """act(fc1_g x) * fc1_x x -> fc2, with separate gate and value projections (timm `SwiGLU`)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: object = "silu",
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        self.fc1_g = nn.Linear(in_features, hidden_features, bias=bias)
        self.fc1_x = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = create_activation(act_layer, inplace=True)  # on fc1_g's fresh output
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1_g(x)) * self.fc1_x(x)
        return self.drop2(self.fc2(self.drop1(x)))


class SwiGLUPacked(nn.Module):
    """SwiGLU with gate and value packed in one fc1 of width `hidden_features` (DINOv2, timm `SwiGLUPacked`)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: object = "silu",
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        if hidden_features % 2:
            raise ValueError(f"SwiGLUPacked needs an even hidden_features (gate + value), got {hidden_features}")
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = create_activation(act_layer, inplace=True)  # on fc1's fresh output
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features // 2, out_features or in_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)  # (..., hidden) -> 2 x (..., hidden / 2)
        return self.drop2(self.fc2(self.drop1(self.act(gate) * value)))


MLP_LAYERS: dict[str, type[nn.Module]] = {"mlp": Mlp, "swiglu": SwiGLU, "swiglu_packed": SwiGLUPacked}


def mlp_layer_name(layer: object) -> str:
    """The registered name of an MLP layer given as a name or one of the classes above."""
    if isinstance(layer, str) and layer in MLP_LAYERS:
        return layer
    for name, cls in MLP_LAYERS.items():
        if layer is cls:
            return name
    raise ValueError(f"unknown mlp_layer {layer!r}; choose one of: {', '.join(MLP_LAYERS)}")
