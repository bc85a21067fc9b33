"""Google JAX checkpoints (.npz): big_vision ViT and SigLIP image towers (per-block or scanned `nn.scan` blocks),
and the original google-research/vision_transformer ViTs.

Flax stores a Dense kernel as (in, out), a patch conv as (ph, pw, C, D), and attention projections per head:
query/key/value kernels (D, H, hd) with biases (H, hd), the output kernel (H, hd, D). The head count is therefore
in the weights, unlike torch layouts. Flax's `nn.gelu` is the tanh approximation and LayerNorm's eps is 1e-6.
"""

from __future__ import annotations

from typing import Any

import torch

from .data_configs import FAMILIES
from .keymap import Renamed, StateDict, take_prefix

# Where the image tower lives: SigLIP two-tower `params/img/`, big_vision `params/`, old optimizer dumps
# `opt/target/`, or the root (google-research/vision_transformer).
PREFIXES = ("params/img/", "params/", "opt/target/", "")
ANCHOR = "embedding/kernel"


def is_big_vision(keys: set[str]) -> bool:
    return any(f"{prefix}{ANCHOR}" in keys for prefix in PREFIXES)


class _Tracked(dict):
    """A state dict that remembers which keys were read, so the ones no rule took reach the key report."""

    def __init__(self, items: StateDict) -> None:
        super().__init__(items)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        self.read.add(key)
        return super().__getitem__(key)


def _prefix(sd: StateDict) -> str:
    for prefix in PREFIXES:
        if f"{prefix}{ANCHOR}" in sd:
            return prefix
    raise ValueError(f"no patch embedding kernel ('{ANCHOR}', optionally under {', '.join(PREFIXES[:-1])})")


def _dense(kernel: torch.Tensor) -> torch.Tensor:
    """(in, out) -> (out, in)."""
    return kernel.transpose(0, 1)


def _heads_in(kernel: torch.Tensor) -> torch.Tensor:
    """q/k/v kernel (D, H, hd) -> Linear weight (H*hd, D)."""
    return kernel.flatten(1).transpose(0, 1)


def _heads_out(kernel: torch.Tensor) -> torch.Tensor:
    """out kernel (H, hd, D) -> Linear weight (D, H*hd)."""
    return kernel.flatten(0, 1).transpose(0, 1)


def _attention(sd: StateDict, src: str, dst: str, fused: tuple[str, ...]) -> StateDict:
    """A Flax MultiHeadDotProductAttention at `src` -> `dst`{q,kv,qkv,proj}; `fused` names what is concatenated
    (('query', 'key', 'value') for a block's qkv)."""
    out: StateDict = {}
    groups = {"qkv": fused} if len(fused) == 3 else {"q": ("query",), "kv": ("key", "value")}
    for name, parts in groups.items():
        out[f"{dst}{name}.weight"] = torch.cat([_heads_in(sd[f"{src}{p}/kernel"]) for p in parts])
        if f"{src}{parts[0]}/bias" in sd:
            out[f"{dst}{name}.bias"] = torch.cat([sd[f"{src}{p}/bias"].reshape(-1) for p in parts])
    out[f"{dst}proj.weight"] = _heads_out(sd[f"{src}out/kernel"])
    if f"{src}out/bias" in sd:
        out[f"{dst}proj.bias"] = sd[f"{src}out/bias"]
    return out


def _norm(sd: StateDict, src: str, dst: str) -> StateDict:
    out = {f"{dst}.weight": sd[f"{src}/scale"]}
    if f"{src}/bias" in sd:
        out[f"{dst}.bias"] = sd[f"{src}/bias"]
    return out


def _mlp(sd: StateDict, src: str, dst: str) -> StateDict:
    out: StateDict = {}
    for i in range(2):
        out[f"{dst}.fc{i + 1}.weight"] = _dense(sd[f"{src}/Dense_{i}/kernel"])
        out[f"{dst}.fc{i + 1}.bias"] = sd[f"{src}/Dense_{i}/bias"]
    return out


def _unscan(sd: StateDict) -> tuple[StateDict, int]:
    """Per-block keys from `nn.scan`-stacked ones (`Transformer/encoderblock/...` with a leading layer axis)."""
    scanned = {k: v for k, v in sd.items() if k.startswith("Transformer/encoderblock/")}
    if not scanned:
        blocks = {int(k.split("/")[1].rsplit("_", 1)[1]) for k in sd if k.startswith("Transformer/encoderblock_")}
        return sd, len(blocks)
    depth = scanned["Transformer/encoderblock/LayerNorm_0/scale"].shape[0]
    out = {k: v for k, v in sd.items() if k not in scanned}
    for key, stacked in scanned.items():
        rest = key.removeprefix("Transformer/encoderblock/")
        for i in range(depth):
            out[f"Transformer/encoderblock_{i}/{rest}"] = stacked[i]
    return out, depth


def _block_names(sd: StateDict) -> tuple[str, str, str, str]:
    """(attention, norm1, norm2, mlp) module names: big_vision numbers them 0,0,1,0; the original ViT 1,0,2,3."""
    if "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel" in sd:
        return "MultiHeadDotProductAttention_1", "LayerNorm_0", "LayerNorm_2", "MlpBlock_3"
    return "MultiHeadDotProductAttention_0", "LayerNorm_0", "LayerNorm_1", "MlpBlock_0"


def convert_big_vision(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    prefix = _prefix(state_dict)
    sd, dropped = take_prefix(state_dict, prefix, "not the image tower")
    if "conv_root/kernel" in sd:
        raise ValueError("a hybrid ResNet-ViT (conv_root/...) checkpoint; vitkit builds plain patch-embedding ViTs")
    unscanned, depth = _unscan(sd)
    sd = _Tracked(unscanned)
    kernel = sd["embedding/kernel"]
    out: StateDict = {}
    if kernel.dim() != 4:
        raise ValueError(f"embedding/kernel is {tuple(kernel.shape)}; expected a (ph, pw, C, D) patch convolution")
    out["patch_embed.proj.weight"] = kernel.permute(3, 2, 0, 1)  # (ph, pw, C, D) -> (D, C, ph, pw)
    if "embedding/bias" in sd:
        out["patch_embed.proj.bias"] = sd["embedding/bias"]
    hints: dict[str, Any] = {"act_layer": "gelu_tanh", "norm_eps": 1e-6, "fc_norm": False}
    if "cls" in sd:
        out["cls_token"] = sd["cls"].reshape(1, 1, -1)
    if "Transformer/posembed_input/pos_embedding" in sd:  # original ViT: the class token has a position
        out["pos_embed"] = sd["Transformer/posembed_input/pos_embedding"]
    elif "pos_embedding" in sd:  # big_vision adds positions to the patches only, before the class token
        out["pos_embed"] = sd["pos_embedding"]
        hints["no_embed_class"] = True
    else:
        hints["pos_embed"] = "sincos"  # big_vision's 'sincos2d' positions are computed, not stored
    attn, norm1, norm2, mlp = _block_names(sd)
    for i in range(depth):
        src, dst = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        out.update(_norm(sd, src + norm1, dst + "norm1"))
        out.update(_attention(sd, f"{src}{attn}/", f"{dst}attn.", ("query", "key", "value")))
        out.update(_norm(sd, src + norm2, dst + "norm2"))
        out.update(_mlp(sd, src + mlp, dst + "mlp"))
    if "Transformer/encoder_norm/scale" in sd:
        out.update(_norm(sd, "Transformer/encoder_norm", "norm"))
    if "MAPHead_0/probe" in sd:
        out["attn_pool.latent"] = sd["MAPHead_0/probe"]
        out.update(_attention(sd, "MAPHead_0/MultiHeadDotProductAttention_0/", "attn_pool.", ()))
        out.update(_norm(sd, "MAPHead_0/LayerNorm_0", "attn_pool.norm"))
        out.update(_mlp(sd, "MAPHead_0/MlpBlock_0", "attn_pool.mlp"))
        hints["global_pool"] = "map"
    else:
        hints["global_pool"] = "token" if "cls_token" in out else "avg"
    if "head/kernel" in sd:
        out["head.weight"], out["head.bias"] = _dense(sd["head/kernel"]), sd["head/bias"]
    for key in sorted(set(sd) - sd.read):
        if key.startswith("pre_logits/"):
            dropped.append(f"{key} (the pre-logits layer of early ViT-21k weights; vitkit has none)")
        else:
            out[key] = sd[key]  # no rule took it: the key report names it as unexpected
    query = f"Transformer/encoderblock_0/{attn}/query/kernel"
    if query in sd:
        hints["num_heads"] = sd[query].shape[1]  # (D, H, hd)
    out = {k: v.contiguous() for k, v in out.items()}
    assumed: dict[str, str] = {}
    FAMILIES["big_vision"].fill(hints, assumed)
    return Renamed(out, hints=hints, dropped=dropped, assumed=assumed)
