"""FLOPs of a ViT from its config, the same-shape GEMMs of one block, and FLOPs counted by PyTorch.

A FLOP here is one multiply or one add (a multiply-add is 2), as `torch.utils.flop_counter` counts;
only matrix products and convolutions count (norms, softmax and activations are a few percent at most).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ..models.config import ViTConfig


@dataclass(frozen=True)
class Gemm:
    """One (batched) matrix product: `batch` times (m, k) @ (k, n).

    `left_t` / `right_t`: that operand is the transposed view of a contiguous matrix, as a Linear's
    weight is (x @ W^T); BLAS speed depends on it (bf16 on some CPUs: 3x).
    """

    name: str
    batch: int
    m: int
    k: int
    n: int
    left_t: bool = False
    right_t: bool = False

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n

    def backward(self) -> list[Gemm]:
        """Its backward products, laid out as autograd runs them: dL = dC @ R^T and dR = L^T @ dC."""
        return [
            Gemm(f"{self.name}.grad_in", self.batch, self.m, self.n, self.k, right_t=not self.right_t),
            Gemm(f"{self.name}.grad_w", self.batch, self.k, self.m, self.n, left_t=not self.left_t),
        ]


@dataclass(frozen=True)
class Shape:
    """What the FLOP count depends on."""

    patches: int  # patch tokens per image
    tokens: int  # tokens through the blocks (patches + class/register tokens)
    patch_dim: int  # channels * patch height * patch width
    dim: int  # residual width
    inner: int  # heads * head_dim
    heads: int
    mlp_in: int  # width of fc1's output
    mlp_hidden: int  # width of fc2's input
    blocks: int
    head_flops: int  # pooling head + classifier, per image


def model_shape(config: ViTConfig) -> Shape:
    """The token counts and widths of `config` at its native image size."""
    (ph, pw), (gh, gw) = config.patch_size, config.grid_size
    patches, dim, hidden = gh * gw, config.embed_dim, config.mlp_width
    inner = config.num_heads * (config.head_dim or dim // config.num_heads)
    mlp_in, mlp_hidden = {"mlp": (hidden, hidden), "swiglu": (2 * hidden, hidden),
                          "swiglu_packed": (hidden, hidden // 2)}[config.mlp_layer]
    head = 0
    if not config.ignore_head:
        if config.global_pool == "map":  # latent query, kv over the patch tokens, proj, MLP
            head = 2 * (dim * dim + patches * dim * 2 * dim + 2 * patches * dim + dim * dim + 2 * dim * hidden)
        head += 2 * dim * config.num_classes
    return Shape(patches, patches + config.num_prefix_tokens, config.in_chans * ph * pw, dim, inner,
                 config.num_heads, mlp_in, mlp_hidden, config.num_blocks, head)


def block_gemms(config: ViTConfig, batch_size: int, train: bool = False) -> list[Gemm]:
    """The matrix products one transformer block runs on a batch (with their backward ones when `train`)."""
    s = model_shape(config)
    rows, head_dim = batch_size * s.tokens, s.inner // s.heads
    forward = [
        Gemm("qkv", 1, rows, s.dim, 3 * s.inner, right_t=True),  # Linear: x @ W^T
        Gemm("attn.scores", batch_size * s.heads, s.tokens, head_dim, s.tokens, right_t=True),  # q @ k^T
        Gemm("attn.values", batch_size * s.heads, s.tokens, s.tokens, head_dim),
        Gemm("proj", 1, rows, s.inner, s.dim, right_t=True),
        Gemm("fc1", 1, rows, s.dim, s.mlp_in, right_t=True),
        Gemm("fc2", 1, rows, s.mlp_hidden, s.dim, right_t=True),
    ]
    return forward + [g for f in forward for g in f.backward()] if train else forward


def analytic_flops(config: ViTConfig, train: bool = False) -> int:
    """FLOPs per image of one forward pass, or of forward + backward when `train`.

    Backward costs twice the forward, except that the patch embedding needs no gradient for the
    image itself. Recomputation (gradient checkpointing, fused attention backward) is not counted:
    this is the model's work, so that throughput in FLOP/s compares fairly across implementations.
    """
    s = model_shape(config)
    patch = 2 * s.patches * s.patch_dim * s.dim
    per_block = sum(g.flops for g in block_gemms(config, 1))
    forward = patch + s.blocks * per_block + s.head_flops
    return 3 * forward - patch if train else forward


def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# PyTorch counts SDPA's CUDA kernels but not the fused CPU one; count it the same way.
_CPU_SDPA = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def flop_counter() -> FlopCounterMode:
    """A quiet `FlopCounterMode` that also counts SDPA's fused CPU kernel."""
    return FlopCounterMode(display=False, custom_mapping=_CPU_SDPA)


def counted_flops(model: nn.Module, images: torch.Tensor, train: bool = False) -> int:
    """FLOPs PyTorch counts for one forward (+ backward of the output's sum when `train`) on `images`.

    Works on the meta device (nothing is computed). Leaves gradients behind when `train`; callers zero them.
    """
    if train:
        with flop_counter() as counter:
            model(images).float().sum().backward()
        return counter.get_total_flops()
    # The counter's module tracker hooks autograd for inputs that require grad, and fails on parameters
    # fed straight into a module (MAP's latent) under no_grad: freeze them while counting.
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        with flop_counter() as counter, torch.no_grad():
            model(images)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return counter.get_total_flops()
