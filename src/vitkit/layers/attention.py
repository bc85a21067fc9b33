"""Multi-head self-attention with a fused qkv projection and a pluggable kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import AttentionChoice, Segments, attention_weights
from .norm import create_norm
from .rope import Rotation

AUTO = AttentionChoice()


class StandaloneChoice:
    """Seed 000's `attention_type` / `deterministic` arguments, for a layer used on its own.

    A layer inside a model holds no choice (`attention` is None): the model passes its own with every call.
    Built with `attention_type` or `deterministic` (as seed 000 builds its layers), the layer keeps that choice
    for calls that pass none; a call's choice always wins.
    """

    attention: AttentionChoice | None

    def _keep_choice(self, attention_type: str | None, deterministic: bool) -> None:
        given = attention_type is not None or deterministic
        self.attention = AttentionChoice(attention_type or "auto", deterministic) if given else None

    def choice(self, attention: AttentionChoice | None) -> AttentionChoice:
        """The choice a call runs under: the caller's, else this layer's own, else 'auto'."""
        return attention or self.attention or AUTO

    @property
    def attention_type(self) -> str | None:
        """The backend this layer was built with (seed 000's attribute); None when it takes its model's."""
        return None if self.attention is None else self.attention.backend

    @property
    def deterministic(self) -> bool:
        return self.attention is not None and self.attention.deterministic


class EfficientAttention(StandaloneChoice, nn.Module):
    """Self-attention over (B, N, C) tokens on a pluggable kernel, chosen per call (`AttentionChoice`).

    `attention_type` (seed 000's argument) is any backend name of `vitkit.attention` ('auto', 'math', 'sdpa',
    'flash', 'xformers', 'flex', 'sdpa:<kernel>') or a seed alias ('scaled_dot_product', 'flash_attention'): the
    layer's own choice when it runs on its own (see `StandaloneChoice`). State-dict names follow timm: qkv,
    q_norm, k_norm, proj. Positional arguments keep seed 000's order; the rest are keyword-only. `head_dim`
    decouples the inner width from `dim` (SimpleViT). `key_bias=False` keeps the key third of the qkv bias at zero
    (masked in every forward, as DINOv3's original and EVA-02 have it). A call's `rope` rotates q and k.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        attention_type: str | None = None,
        deterministic: bool = False,
        *,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        head_dim: int | None = None,
        proj_bias: bool = True,
        norm_layer: object = "layernorm",
        norm_eps: float = 1e-5,
        key_bias: bool = True,
    ) -> None:
        super().__init__()
        if head_dim is None:
            if num_heads <= 0 or dim % num_heads:
                raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
            head_dim = dim // num_heads
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self._keep_choice(attention_type, deterministic)
        self.attn_drop = attn_drop
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, inner * 3, bias=qkv_bias)
        if qkv_bias and not key_bias:  # ones for q and v, zeros for k
            self.register_buffer("bias_mask", torch.ones(inner * 3).index_fill_(0, torch.arange(inner, 2 * inner), 0),
                                 persistent=False)
        else:
            self.bias_mask = None
        self.q_norm = create_norm(norm_layer, head_dim, norm_eps) if qk_norm else nn.Identity()
        self.k_norm = create_norm(norm_layer, head_dim, norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor, rope: Rotation | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (B, N, C) -> q, k, v, each (B, H, N, D), q and k normalised when qk_norm is on, then rotated."""
        B, N, _ = x.shape
        if self.bias_mask is None:
            qkv = self.qkv(x)
        else:
            qkv = F.linear(x, self.qkv.weight, self.qkv.bias * self.bias_mask)
        qkv = qkv.reshape(B, N, 3, self.num_heads, self.head_dim)
        # (B, N, 3, H, D) -> 3 x (B, H, N, D) views; in backward, unbind's stack rebuilds qkv's gradient in
        # its own layout, where splitting along a leading axis would cost a second full copy.
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope.rotate(q), rope.rotate(k)
        return q, k, v

    def fold_for_inference(self) -> None:
        """Apply the key-bias mask to qkv.bias once, so that `qkv` runs as a plain module call (which a quantized or
        compiled linear layer can replace); the layer no longer keeps the key bias at zero while training."""
        if self.bias_mask is not None:
            with torch.no_grad():
                self.qkv.bias.mul_(self.bias_mask)
            self.bias_mask = None

    def drop_zero_qkv_bias(self, state_dict: dict[str, torch.Tensor], prefix: str) -> str | None:
        """Remove `{prefix}qkv.bias` from `state_dict` when this layer has no qkv bias and that bias is all zero;
        return the key removed. Seed 000 builds the bias whatever its `qkv_bias` says and initialises it to zero,
        so its qkv_bias=False checkpoints carry one; a zero bias is no bias. A non-zero one is kept, and loading
        then reports it as unexpected (build the model with qkv_bias=True)."""
        key = f"{prefix}qkv.bias"
        if self.qkv.bias is None and key in state_dict and not state_dict[key].any():
            del state_dict[key]
            return key
        return None

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        self.drop_zero_qkv_bias(state_dict, prefix)  # a copy owned by load_state_dict, not the caller's dict
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def attention_weights(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                          rope: Rotation | None = None) -> torch.Tensor:
        """The softmax weights this layer applies to tokens `x`, (B, H, N, N), from the math path whatever kernel
        runs the forward (fused kernels never materialise them)."""
        q, k, _ = self._qkv(x, rope)
        return attention_weights(q, k, attn_mask, self.scale)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | Segments | None = None,
                attention: AttentionChoice | None = None, rope: Rotation | None = None) -> torch.Tensor:
        """`attn_mask` is a mask tensor, or `Segments` for packed sequences (each token sees its own segment);
        `attention` is the kernel choice of the model that calls (see `StandaloneChoice`); `rope` the rotation of
        q and k (2D RoPE), one row per token slot."""
        B, N, _ = x.shape
        q, k, v = self._qkv(x, rope)
        dropout = self.attn_drop if self.training else 0.0
        x = self.choice(attention).attend(q, k, v, attn_mask, dropout_p=dropout, scale=self.scale)
        x = x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)  # (B, H, N, D) -> (B, N, H*D)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        own = "" if self.attention is None else f", attention={self.attention.backend!r}"
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}{own}"
