"""timm's Eva layout (`timm/models/eva.py`): DINOv3, EVA-02, RoPE-Mixed and Perception Encoder towers.

Against timm's VisionTransformer layout it differs in: LayerScale as `gamma_1` / `gamma_2`; q and v biases as
`attn.q_bias` / `attn.v_bias` beside a bias-free fused `attn.qkv` (the key bias is a zero buffer), or unfused
`attn.{q,k,v}_proj` (EVA-02 base / large); RoPE-Mixed's learned frequencies as `rope.freqs`. The rotary variant and
its settings are not in the weights: a timm hub config.json's architecture names them, else they are assumed from
the keys and said so.
"""

from __future__ import annotations

from typing import Any

import torch

from ..layers import ROPES
from .data_configs import FAMILIES, registered_data
from .infer import mlp_ratio_for
from .keymap import Renamed, StateDict, block_count, rename
from .timm import pretrained_cfg_hints

RULES = [(r"\.gamma_1$", ".ls1.gamma"), (r"\.gamma_2$", ".ls2.gamma")]
# Settings of the registered configs that the weights cannot show (shapes are read from the tensors; the data config
# from config.json's pretrained_cfg, else the registered one, said so).
NAMED_FIELDS = (
    "rope", "rope_theta", "rope_grid", "rope_offset", "rope_indexing", "key_bias", "mlp_norm", "act_layer", "norm_eps",
    "global_pool", "fc_norm", "img_size", "dynamic_img_size", "num_heads",
)


def fuse_eva_qkv(sd: StateDict) -> tuple[StateDict, bool]:
    """q/k/v projections and the separate q / v biases of each block -> `attn.qkv.{weight,bias}`, a missing key
    bias filled with zeros; returns (state dict, whether the key bias is held at zero: q / v biases without one)."""
    out, masked = dict(sd), False
    for i in range(block_count(sd)):
        attn = f"blocks.{i}.attn."
        if attn + "q_proj.weight" in out:
            out[attn + "qkv.weight"] = torch.cat([out.pop(attn + f"{p}_proj.weight") for p in "qkv"])
            q, k, v = (out.pop(attn + f"{p}_proj.bias", None) for p in "qkv")
        else:  # fused: a bias-free qkv with q_bias / v_bias beside it, or a plain biased qkv (AttentionRope)
            q, k, v = out.pop(attn + "q_bias", None), None, out.pop(attn + "v_bias", None)
        if q is None and v is None:
            continue
        masked = masked or k is None
        out[attn + "qkv.bias"] = torch.cat([q, k if k is not None else torch.zeros_like(q), v])
    return out, masked


def _guess(sd: StateDict) -> tuple[dict[str, Any], str]:
    """The settings the keys point to, when no config names the architecture, and the family whose data config
    goes with them: RoPE-Mixed with learned frequencies, DINOv3 with registers and no table, else EVA-02 (its MIM
    pretraining grid of 16 x 16 as the reference)."""
    if "rope.freqs" in sd:
        return dict(rope="mixed", rope_theta=10.0, rope_indexing="xy", norm_eps=1e-6, img_size=224), "timm_rope_mixed"
    if "reg_token" in sd and "pos_embed" not in sd:
        return dict(rope="dinov3", rope_theta=100.0, dynamic_img_size=True, norm_eps=1e-5, global_pool="avg",
                    fc_norm=False, img_size=256), "timm_dinov3"
    return dict(rope="eva02", rope_theta=10000.0, rope_grid=(16, 16), norm_eps=1e-6), "timm_eva02"


def convert_timm_eva(state_dict: StateDict, meta: dict[str, Any]) -> Renamed:
    from ..models import get_config

    sd, masked = fuse_eva_qkv(rename(state_dict, RULES))
    hints: dict[str, Any] = {"key_bias": not masked}
    if "blocks.0.mlp.norm.weight" in sd:
        hints["mlp_norm"] = True
    config = meta.get("config") or {}
    stated = pretrained_cfg_hints(config)
    arch = str(config.get("architecture", "")).split(".")[0]
    named = registered_data(arch)
    if named is not None:
        hints = {**{f: getattr(get_config(arch), f) for f in NAMED_FIELDS}, **stated, **hints}
        assumed: dict[str, str] = {}
        named.fill(hints, assumed)
        return Renamed(sd, hints=hints, assumed=assumed)
    guess, family = _guess(sd)
    gated = "blocks.0.mlp.fc1_g.weight" in sd or (
        sd["blocks.0.mlp.fc2.weight"].shape[1] * 2 == sd["blocks.0.mlp.fc1.weight"].shape[0])
    guess["act_layer"] = "silu" if gated else "gelu"  # timm's Eva: SiLU in its gated MLPs, GELU otherwise
    assumed = {k: f"{v!r} (no config.json names the architecture; guessed from the keys)" for k, v in guess.items()
               if k not in stated}
    hints = {**guess, **stated, **hints}
    FAMILIES[family].fill(hints, assumed)
    return Renamed(sd, hints=hints, assumed=assumed)


# vitkit rope -> timm Eva's rope_type
TIMM_ROPE_TYPES = {"dinov3": "dinov3", "eva02": "cat", "mixed": "mixed"}


def timm_eva_args(c: Any) -> dict[str, Any]:
    """Keyword arguments of timm's `Eva` building the RoPE tower `c` (a ViTConfig; the norm layer as a plain
    LayerNorm eps, for the caller to bind); ValueError naming what Eva cannot build."""
    act = "gelu" if c.mlp_layer == "mlp" else "silu"  # Eva runs GELU in its Mlp, SiLU in its gated MLPs
    checks = {
        "a rotary position embedding (rope != 'none')": c.rope in TIMM_ROPE_TYPES,
        "pre-norm blocks with LayerNorm and a conv patch embedding": c.pre_norm and c.norm_layer == "layernorm"
        and c.patch_embed == "conv",
        "heads of embed_dim / num_heads and every block built": c.head_dim in (None, c.embed_dim // c.num_heads)
        and c.num_blocks == c.depth,
        "an output-projection bias, and a patch bias unless there is a pre-norm": c.proj_bias
        and c.patch_bias in (None, not c.norm_pre),
        f"act_layer={act!r} with mlp_layer={c.mlp_layer!r}": c.act_layer == act,
    }
    failed = [what for what, ok in checks.items() if not ok]
    if failed:
        raise ValueError(f"timm's Eva cannot build this model: it needs {'; '.join(failed)}")
    packed = c.mlp_layer == "swiglu_packed"
    return dict(
        img_size=list(c.img_size), patch_size=list(c.patch_size), in_chans=c.in_chans, num_classes=c.num_classes,
        global_pool=c.global_pool, embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
        qkv_bias=c.qkv_bias, qk_norm=c.qk_norm, attn_type="rope" if c.key_bias else "eva",
        mlp_ratio=mlp_ratio_for(c.mlp_width // 2 if packed else c.mlp_width, c.embed_dim),
        swiglu_mlp=c.mlp_layer != "mlp",
        scale_mlp=c.mlp_norm, swiglu_align_to=1 if c.mlp_layer == "swiglu" and not c.mlp_norm else 0,
        init_values=c.init_values, class_token=c.class_token, num_reg_tokens=c.reg_tokens,
        no_embed_class=c.no_embed_class, use_abs_pos_emb=c.pos_embed == "learn", use_rot_pos_emb=True,
        rope_type=TIMM_ROPE_TYPES[c.rope], rope_temperature=c.rope_theta or ROPES[c.rope].theta,
        rope_grid_offset=c.rope_offset, rope_grid_indexing=c.rope_indexing, rope_rotate_half=c.rope == "dinov3",
        ref_feat_shape=c.rope_grid,
        use_pre_transformer_norm=c.norm_pre, use_fc_norm=c.use_fc_norm,
        use_post_transformer_norm=c.final_norm and not c.use_fc_norm, dynamic_img_size=c.dynamic_img_size,
    )


def to_timm_eva(state_dict: StateDict, key_bias: bool) -> StateDict:
    """vitkit weights in timm Eva's names (fused qkv): LayerScale as gamma_1 / gamma_2 and, when the key bias is
    held at zero, the qkv bias as q_bias / v_bias."""
    out = rename(state_dict, [(r"\.ls1\.gamma$", ".gamma_1"), (r"\.ls2\.gamma$", ".gamma_2")])
    if not key_bias:
        for key in [k for k in out if k.endswith(".attn.qkv.bias")]:
            q, _, v = out.pop(key).chunk(3)
            out[key.replace("qkv.bias", "q_bias")], out[key.replace("qkv.bias", "v_bias")] = q, v
    return out
