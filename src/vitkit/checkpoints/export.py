"""vitkit -> timm, HF SigLIP and HF ViT layouts, each with the config its library needs to rebuild the model.

An export refuses (ValueError naming the field) any config the target library cannot build, rather than
writing weights that would load into a model computing something else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..choices import EXPORT_FORMATS
from ..models import ViTConfig
from ..runtime import write_text
from .hf_common import VITKIT_TO_HF_ACT
from .infer import mlp_ratio_for
from .io import save_state_dict
from .keymap import StateDict, block_count, split_qkv
from .pretrained import Loaded, load_checkpoint, save_pretrained

TIMM_MLP_CLASSES = {
    "mlp": "timm.layers.Mlp", "swiglu": "timm.layers.SwiGLU", "swiglu_packed": "timm.layers.SwiGLUPacked",
}


def _vit_config(model: nn.Module, target: str) -> ViTConfig:
    config = getattr(model, "config", None)
    if not isinstance(config, ViTConfig):
        raise ValueError(f"only VisionTransformer models export to {target}; this is a {type(model).__name__} "
                         "(save it with --to vitkit)")
    return config


def _require(config: ViTConfig, target: str, checks: dict[str, bool]) -> None:
    failed = [what for what, ok in checks.items() if not ok]
    if failed:
        raise ValueError(f"{target} cannot build this model: it needs {'; '.join(failed)}")


def _common_checks(c: ViTConfig) -> dict[str, bool]:
    return {
        "pre-norm blocks (pre_norm=True)": c.pre_norm,
        "a conv patch embedding (patch_embed='conv')": c.patch_embed == "conv",
        "heads of embed_dim / num_heads (head_dim=None)": c.head_dim in (None, c.embed_dim // c.num_heads),
        "LayerNorm (norm_layer='layernorm')": c.norm_layer == "layernorm",
        "blocks built to the full depth (select_layer=-1)": c.num_blocks == c.depth,
        "no rotary position embedding (rope='none'; RoPE towers stay vitkit directories)": c.rope == "none",
        "a trained key bias and no MLP norm (key_bias=True, mlp_norm=False)": c.key_bias and not c.mlp_norm,
    }


def timm_mlp_ratio(c: ViTConfig) -> float:
    """timm's `mlp_ratio` for `c`: int(embed_dim * ratio) is the MLP width, also when `mlp_hidden_dim` sets it."""
    return c.mlp_ratio if c.mlp_hidden_dim is None else mlp_ratio_for(c.mlp_hidden_dim, c.embed_dim)


def timm_model_args(c: ViTConfig) -> dict[str, Any]:
    """Keyword arguments of timm's VisionTransformer for `c` (plain values; the layers timm takes as Python
    objects come from `timm_layers`); ValueError naming what timm cannot build."""
    _require(c, "timm", {**_common_checks(c), "a learned or no position table (pos_embed != 'sincos')":
                         c.pos_embed != "sincos"})
    return dict(
        img_size=list(c.img_size), patch_size=list(c.patch_size), in_chans=c.in_chans, num_classes=c.num_classes,
        global_pool=c.global_pool, embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
        mlp_ratio=timm_mlp_ratio(c), qkv_bias=c.qkv_bias, qk_norm=c.qk_norm, proj_bias=c.proj_bias,
        init_values=c.init_values, class_token=c.class_token, pos_embed=c.pos_embed, no_embed_class=c.no_embed_class,
        reg_tokens=c.reg_tokens, pre_norm=c.norm_pre, final_norm=c.final_norm, fc_norm=c.fc_norm,
        dynamic_img_size=c.dynamic_img_size, dynamic_img_pad=c.dynamic_img_pad, act_layer=c.act_layer,
    )


def timm_layers(c: ViTConfig) -> dict[str, tuple[str, dict[str, Any]]]:
    """The layers timm takes only as Python objects: argument -> (dotted class, keyword arguments to bind)."""
    return {"norm_layer": ("torch.nn.LayerNorm", {"eps": c.norm_eps}), "mlp_layer": (TIMM_MLP_CLASSES[c.mlp_layer], {})}


def timm_args(model: nn.Module) -> dict[str, Any]:
    """{'model_args': keyword arguments of timm's VisionTransformer, 'objects': those timm takes only as Python
    objects, written out (pass them as such), where they differ from timm's defaults}."""
    c = _vit_config(model, "timm")
    args = timm_model_args(c)
    objects = {}
    if c.mlp_layer != "mlp":
        objects["mlp_layer"] = TIMM_MLP_CLASSES[c.mlp_layer]
    if c.norm_eps != 1e-6:
        objects["norm_layer"] = f"functools.partial(torch.nn.LayerNorm, eps={c.norm_eps!r})"
    return {"model_args": args, "objects": objects}


def _hf_blocks(sd: StateDict, layer: str, names: dict[str, str]) -> StateDict:
    """Per-block tensors under HF names: `layer` formats the block prefix, `names` maps vitkit -> HF suffixes."""
    out: StateDict = {}
    for i in range(block_count(sd)):
        q, k, v = split_qkv(sd, f"blocks.{i}.attn.qkv.weight")
        qb, kb, vb = split_qkv(sd, f"blocks.{i}.attn.qkv.bias")
        tensors = {"q.weight": q, "q.bias": qb, "k.weight": k, "k.bias": kb, "v.weight": v, "v.bias": vb}
        for ours in ("proj", "norm1", "norm2", "fc1", "fc2"):
            base = f"blocks.{i}.attn.proj" if ours == "proj" else (
                f"blocks.{i}.mlp.{ours}" if ours.startswith("fc") else f"blocks.{i}.{ours}")
            for kind in ("weight", "bias"):
                tensors[f"{ours}.{kind}"] = sd[f"{base}.{kind}"]
        for key, tensor in tensors.items():
            ours, kind = key.split(".")
            out[f"{layer.format(i)}{names[ours]}.{kind}"] = tensor
    return out


def _hf_checks(c: ViTConfig) -> dict[str, bool]:
    return {
        **_common_checks(c),
        "a learned position table (pos_embed='learn')": c.pos_embed == "learn",
        "qkv, output-projection and patch biases": c.qkv_bias and c.proj_bias and c.patch_bias is not False,
        "no qk_norm, LayerScale, norm_pre or register tokens": not (c.qk_norm or c.init_values or c.norm_pre
                                                                    or c.reg_tokens),
        "the plain MLP (mlp_layer='mlp')": c.mlp_layer == "mlp",
        f"an activation HF names ({', '.join(VITKIT_TO_HF_ACT)})": c.act_layer in VITKIT_TO_HF_ACT,
        "a square image and patch": c.img_size[0] == c.img_size[1] and c.patch_size[0] == c.patch_size[1],
    }


def _hf_common(c: ViTConfig) -> dict[str, Any]:
    return {
        "hidden_size": c.embed_dim, "intermediate_size": c.mlp_width, "num_hidden_layers": c.depth,
        "num_attention_heads": c.num_heads, "num_channels": c.in_chans, "image_size": c.img_size[0],
        "patch_size": c.patch_size[0], "hidden_act": VITKIT_TO_HF_ACT[c.act_layer], "layer_norm_eps": c.norm_eps,
    }


def hf_siglip_config(c: ViTConfig) -> dict[str, Any]:
    """The config.json of the transformers SiglipVisionModel that computes `c`; ValueError naming what it lacks."""
    _require(c, "HF SiglipVisionModel", {
        **_hf_checks(c), "no class token": not c.class_token,
        "MAP pooling, or avg pooling after the final norm": c.global_pool == "map" or (
            c.global_pool == "avg" and not c.use_fc_norm),
        "no classifier (num_classes=0)": c.num_classes == 0,
    })
    return {"architectures": ["SiglipVisionModel"], "model_type": "siglip_vision_model", **_hf_common(c),
            "attention_dropout": 0.0, "vision_use_head": c.global_pool == "map"}


def hf_vit_config(c: ViTConfig) -> dict[str, Any]:
    """The config.json of the transformers ViTForImageClassification (ViTModel without a classifier) that computes
    `c`; ValueError naming what it lacks."""
    _require(c, "HF ViTModel", {
        **_hf_checks(c), "a class token, pooled (global_pool='token')": c.class_token and c.global_pool == "token",
        "the class token inside the position table (no_embed_class=False)": not c.no_embed_class,
        "the final norm over all tokens (final_norm, no fc_norm)": c.final_norm and not c.use_fc_norm,
    })
    config: dict[str, Any] = {
        "architectures": ["ViTForImageClassification" if c.num_classes else "ViTModel"], "model_type": "vit",
        **_hf_common(c), "qkv_bias": c.qkv_bias, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    }
    if c.num_classes:
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(c.num_classes)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(c.num_classes)}
    return config


def hf_siglip(model: nn.Module) -> tuple[StateDict, dict[str, Any]]:
    """(SiglipVisionModel state dict, its config.json)."""
    c = _vit_config(model, "HF SigLIP")
    config = hf_siglip_config(c)
    sd = model.state_dict()
    names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "proj": "self_attn.out_proj",
             "norm1": "layer_norm1", "norm2": "layer_norm2", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
    out = _hf_blocks(sd, "encoder.layers.{}.", names)
    out["embeddings.patch_embedding.weight"] = sd["patch_embed.proj.weight"]
    out["embeddings.patch_embedding.bias"] = sd["patch_embed.proj.bias"]
    out["embeddings.position_embedding.weight"] = sd["pos_embed"][0]  # (1, N, D) -> (N, D)
    out["post_layernorm.weight"], out["post_layernorm.bias"] = sd["norm.weight"], sd["norm.bias"]
    if c.global_pool == "map":
        out["head.probe"] = sd["attn_pool.latent"]
        for kind in ("weight", "bias"):
            # q (D, ...) and kv (2D, ...) -> nn.MultiheadAttention's packed in_proj (3D, ...)
            out[f"head.attention.in_proj_{kind}"] = torch.cat([sd[f"attn_pool.q.{kind}"], sd[f"attn_pool.kv.{kind}"]])
            out[f"head.attention.out_proj.{kind}"] = sd[f"attn_pool.proj.{kind}"]
            out[f"head.layernorm.{kind}"] = sd[f"attn_pool.norm.{kind}"]
            out[f"head.mlp.fc1.{kind}"] = sd[f"attn_pool.mlp.fc1.{kind}"]
            out[f"head.mlp.fc2.{kind}"] = sd[f"attn_pool.mlp.fc2.{kind}"]
    return out, config


def hf_vit(model: nn.Module) -> tuple[StateDict, dict[str, Any]]:
    """(ViTForImageClassification state dict, or ViTModel's without a classifier; its config.json)."""
    c = _vit_config(model, "HF ViT")
    config = hf_vit_config(c)
    sd = model.state_dict()
    prefix = "vit." if c.num_classes else ""
    names = {"q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value",
             "proj": "attention.output.dense", "norm1": "layernorm_before", "norm2": "layernorm_after",
             "fc1": "intermediate.dense", "fc2": "output.dense"}
    out = _hf_blocks(sd, prefix + "encoder.layer.{}.", names)
    out[f"{prefix}embeddings.cls_token"] = sd["cls_token"]
    out[f"{prefix}embeddings.position_embeddings"] = sd["pos_embed"]
    for kind in ("weight", "bias"):
        out[f"{prefix}embeddings.patch_embeddings.projection.{kind}"] = sd[f"patch_embed.proj.{kind}"]
        out[f"{prefix}layernorm.{kind}"] = sd[f"norm.{kind}"]
        if c.num_classes:
            out[f"classifier.{kind}"] = sd[f"head.{kind}"]
    return out, config


def resolve_target(model: nn.Module, to: str) -> str:
    """'hf' -> 'hf-siglip' for class-token-free towers, else 'hf-vit'; other names checked and kept."""
    if to not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {to!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    if to != "hf":
        return to
    return "hf-vit" if getattr(getattr(model, "config", None), "class_token", False) else "hf-siglip"


def save_exported(model: nn.Module, directory: str | os.PathLike, to: str = "vitkit") -> list[Path]:
    """Write `model` to `directory` in the `to` layout; returns the files written.

    vitkit: config.json + model.safetensors. timm: model.safetensors (timm keys) + timm_args.json.
    hf-siglip / hf-vit (or 'hf', picked from the config): model.safetensors + an HF config.json, loadable
    with `from_pretrained`.
    """
    directory = Path(directory)
    target = resolve_target(model, to)
    if target == "vitkit":
        save_pretrained(model, directory)
        return [directory / "model.safetensors", directory / "config.json"]
    if target == "timm":
        args = timm_args(model)
        save_state_dict(model.state_dict(), directory / "model.safetensors")
        write_text(directory / "timm_args.json", json.dumps(args, indent=2) + "\n")
        return [directory / "model.safetensors", directory / "timm_args.json"]
    state_dict, config = (hf_siglip if target == "hf-siglip" else hf_vit)(model)
    save_state_dict(state_dict, directory / "model.safetensors")
    write_text(directory / "config.json", json.dumps(config, indent=2) + "\n")
    return [directory / "model.safetensors", directory / "config.json"]


def convert_checkpoint(source: str | os.PathLike, directory: str | os.PathLike, *, source_format: str = "auto",
                       to: str = "vitkit", strict: bool = True, **load_args: Any) -> tuple[Loaded, list[Path]]:
    """Load `source` (anything `load_pretrained` takes) and write it to `directory` in the `to` layout.
    Returns the load record (format, key report, assumed fields) and the files written."""
    loaded = load_checkpoint(source, source_format=source_format, strict=strict, **load_args)
    return loaded, save_exported(loaded.model, directory, to)
