"""Feed-forward layers: the classic two-layer MLP and the gated SwiGLU variants (timm state-dict names)."""

from __future__ import annotations

import torch
from torch import nn

from .activations import create_activation
from .norm import create_norm


class _FeedForward(nn.Module):
    """What every MLP here shares: its input projection(s) to the hidden width (the subclass's `_project_in`), an
    activation, dropout, optionally a norm of the hidden features (EVA-02's sub-LN; `norm_layer` = (name, eps)),
    `fc2` back to `out_features` (default: `in_features`), dropout again."""

    default_act = "gelu"
    fc2_share = 1  # fc2 reads hidden_features // fc2_share: 2 where one fc1 packs gate and value

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: object = None,
        bias: bool = True,
        drop: float = 0.0,
        norm_layer: tuple[object, float] | None = None,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        if hidden_features % self.fc2_share:
            raise ValueError(f"{type(self).__name__} needs an even hidden_features (gate + value), got "
                             f"{hidden_features}")
        self._project_in(in_features, hidden_features, bias)
        self.act = create_activation(act_layer or self.default_act, inplace=True)  # on a fresh projection
        self.drop1 = nn.Dropout(drop)
        width = hidden_features // self.fc2_share
        self.norm = create_norm(norm_layer[0], width, norm_layer[1]) if norm_layer else nn.Identity()
        self.fc2 = nn.Linear(width, out_features or in_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def _project_in(self, in_features: int, hidden_features: int, bias: bool) -> None:
        raise NotImplementedError

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_features) -> activated (..., hidden_features // fc2_share)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.norm(self.drop1(self.hidden(x)))))


class Mlp(_FeedForward):
    """fc1 -> activation (GELU by default) -> dropout -> fc2 -> dropout."""

    def _project_in(self, in_features: int, hidden_features: int, bias: bool) -> None:
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc1(x))


class SwiGLU(_FeedForward):
    """act(fc1_g x) * fc1_x x -> fc2, with separate gate and value projections (timm `SwiGLU`); SiLU by default."""

    default_act = "silu"

    def _project_in(self, in_features: int, hidden_features: int, bias: bool) -> None:
        self.fc1_g = nn.Linear(in_features, hidden_features, bias=bias)
        self.fc1_x = nn.Linear(in_features, hidden_features, bias=bias)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc1_g(x)) * self.fc1_x(x)


class SwiGLUPacked(_FeedForward):
    """SwiGLU with gate and value packed in one fc1 of width `hidden_features` (DINOv2, timm `SwiGLUPacked`)."""

    default_act = "silu"
    fc2_share = 2

    def _project_in(self, in_features: int, hidden_features: int, bias: bool) -> None:
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)  # (..., hidden) -> 2 x (..., hidden / 2)
        return self.act(gate) * value


MLP_LAYERS: dict[str, type[nn.Module]] = {"mlp": Mlp, "swiglu": SwiGLU, "swiglu_packed": SwiGLUPacked}


def mlp_layer_name(layer: object) -> str:
    """The registered name of an MLP layer given as a name or one of the classes above."""
    if isinstance(layer, str) and layer in MLP_LAYERS:
        return layer
    for name, cls in MLP_LAYERS.items():
        if layer is cls:
            return name
    raise ValueError(f"unknown mlp_layer {layer!r}; choose one of: {', '.join(MLP_LAYERS)}")
