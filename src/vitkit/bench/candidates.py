"""What gets benchmarked: vitkit on one attention backend, or a peer library building the same architecture.

Every builder takes a vitkit config and returns a module mapping images (B, C, H, W) to one tensor.
A peer that cannot express the config raises `Unsupported` with the reason, and its row is skipped.
timm shares vitkit's state-dict layout, so its model runs on vitkit's very weights (a strict load also
proves the two architectures are the same); the others run their own initialisation of the same shapes.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..attention import BACKENDS, Request, choose
from ..attention.capability import cuda_capability
from ..models import build_model
from ..models.config import SimpleViTConfig, ViTConfig
from .flops import model_shape

ModelConfig = ViTConfig | SimpleViTConfig


def image_shape(config: ModelConfig) -> tuple[int, int, int]:
    """(channels, height, width) of the images the model takes."""
    if isinstance(config, SimpleViTConfig):
        return (config.channels, *config.image_size)
    return (config.in_chans, *config.img_size)


class Unsupported(Exception):
    """This candidate cannot build or run this configuration here; the message says why."""


@dataclass
class Built:
    """A candidate's model, ready to time, and how to describe it."""

    model: nn.Module
    library: str  # "timm 1.0.31"
    notes: str = ""


def _version(dist: str) -> str:
    try:
        return f"{dist} {importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return dist


class _Output(nn.Module):
    """Wraps a model whose forward returns a structure, picking the one tensor to time and train on."""

    def __init__(self, model: nn.Module, pick: Callable[[object], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.pick = pick

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pick(self.model(images))


def _require(checks: dict[str, bool], library: str) -> None:
    """Raise `Unsupported` naming the first config property the library cannot express."""
    for what, ok in checks.items():
        if not ok:
            raise Unsupported(f"{library} cannot build this model: {what}")


def _whole_checkpointing(model_blocks: int, n: int, library: str) -> bool:
    """Peers recompute every block or none: True for all, False for none, Unsupported in between."""
    if 0 < n < model_blocks:
        raise Unsupported(f"{library} recomputes all {model_blocks} blocks or none; asked for {n}")
    return n > 0


# -- vitkit ---------------------------------------------------------------------------------------


def vitkit_attention(config: ModelConfig, attention: str, device: torch.device, dtype: torch.dtype,
                     train: bool) -> str:
    """The kernel vitkit runs for `attention` ('auto' resolved); Unsupported when the named one cannot run."""
    shape = model_shape(config)
    request = Request(device.type, dtype, shape.inner // shape.heads, needs_grad=train,
                      compute_capability=cuda_capability(device))
    if attention == "auto":
        return choose(request)
    why = BACKENDS[attention].reason(request)
    if why is not None:
        raise Unsupported(f"attention backend '{attention}' {why}")
    return attention


def check_vitkit(config: ModelConfig, grad_checkpointing: int) -> None:
    if grad_checkpointing and isinstance(config, SimpleViTConfig):
        raise Unsupported("vitkit's SimpleViT has no gradient checkpointing (VisionTransformer has)")


def build_vitkit(config: ModelConfig, device: torch.device, attention: str, grad_checkpointing: int) -> Built:
    """vitkit's model for `config` with its attention on `attention`, recomputing the first N blocks."""
    check_vitkit(config, grad_checkpointing)
    config = config.replace(attention_type=attention)
    if grad_checkpointing:
        config = config.replace(num_recomputing_layers=grad_checkpointing)
    from .. import __version__

    return Built(build_model(config).to(device), f"vitkit {__version__}")


# -- timm -----------------------------------------------------------------------------------------


def check_timm(config: ModelConfig, grad_checkpointing: int) -> None:
    if not isinstance(config, ViTConfig):
        raise Unsupported("timm has no SimpleViT (LayerNorm-Linear-LayerNorm patches, sin-cos positions)")
    _require({
        "post-norm blocks (pre_norm=False)": config.pre_norm,
        "a fixed sin-cos position table": config.pos_embed != "sincos",
        "select_layer (dropping blocks)": config.select_layer == -1,
        "ignore_head": not config.ignore_head,
    }, "timm's VisionTransformer")
    _whole_checkpointing(config.depth, grad_checkpointing, "timm")


def _timm_kwargs(cfg: ViTConfig) -> dict:
    from timm.layers import Mlp, SwiGLU, SwiGLUPacked

    norm = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}[cfg.norm_layer]
    return dict(
        img_size=cfg.img_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans, num_classes=cfg.num_classes,
        global_pool=cfg.global_pool, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm, proj_bias=cfg.proj_bias,
        init_values=cfg.init_values, class_token=cfg.class_token, pos_embed=cfg.pos_embed,
        no_embed_class=cfg.no_embed_class, reg_tokens=cfg.reg_tokens, pre_norm=cfg.norm_pre,
        final_norm=cfg.final_norm, fc_norm=cfg.fc_norm, dynamic_img_size=cfg.dynamic_img_size,
        dynamic_img_pad=cfg.dynamic_img_pad, drop_rate=cfg.head_drop_rate,
        pos_drop_rate=cfg.drop_rate if cfg.pos_drop_rate is None else cfg.pos_drop_rate,
        proj_drop_rate=cfg.drop_rate if cfg.proj_drop_rate is None else cfg.proj_drop_rate,
        attn_drop_rate=cfg.attn_drop_rate, drop_path_rate=cfg.drop_path_rate, weight_init="skip",
        norm_layer=functools.partial(norm, eps=cfg.norm_eps), act_layer=cfg.act_layer,
        mlp_layer={"mlp": Mlp, "swiglu": SwiGLU, "swiglu_packed": SwiGLUPacked}[cfg.mlp_layer],
    )


def build_timm(config: ViTConfig, device: torch.device, grad_checkpointing: int) -> Built:
    """timm's `VisionTransformer` with the same arguments, carrying vitkit's weights (strict load)."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    with torch.device("meta"):  # no memory: the parameters below are vitkit's own tensors
        model = TimmViT(**_timm_kwargs(config))
    weights = build_model(config).to(device).state_dict()
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as err:
        raise Unsupported(f"timm's model differs from vitkit's: {str(err).splitlines()[0]}") from err
    model.set_grad_checkpointing(grad_checkpointing > 0)
    return Built(model, _version("timm"), "vitkit's weights (identical state dict)")


# -- vit-pytorch ----------------------------------------------------------------------------------


def check_vit_pytorch(config: ModelConfig, grad_checkpointing: int) -> None:
    if grad_checkpointing:
        raise Unsupported("vit-pytorch has no gradient checkpointing")
    if isinstance(config, SimpleViTConfig):
        _require({"a classifier (num_classes > 0)": config.num_classes > 0}, "vit-pytorch SimpleViT")
        return
    layers = (config.act_layer, config.mlp_layer, config.norm_layer)
    _require({
        "this pooling (it pools the class token or the mean)": _vit_pytorch_pool(config) is not None,
        "register tokens": config.reg_tokens == 0,
        "this position embedding": config.pos_embed == "learn" and not config.no_embed_class,
        "post-norm blocks or select_layer": config.pre_norm and config.select_layer == -1,
        f"{'/'.join(layers)} (it has gelu/mlp/layernorm)": layers == ("gelu", "mlp", "layernorm"),
        "LayerScale, qk-norm or a pre-norm": config.init_values is None and not (config.qk_norm or config.norm_pre),
    }, "vit-pytorch ViT")


def _vit_pytorch_pool(config: ViTConfig) -> str | None:
    if config.class_token and config.global_pool == "token":
        return "cls"
    return "mean" if not config.class_token and config.global_pool == "avg" else None


def build_vit_pytorch(config: ModelConfig, device: torch.device, grad_checkpointing: int) -> Built:
    """lucidrains' `SimpleViT` for SimpleViT configs, its `ViT` (closest shapes) for ViT configs."""
    if isinstance(config, SimpleViTConfig):
        from vit_pytorch import SimpleViT

        model = SimpleViT(image_size=config.image_size, patch_size=config.patch_size, num_classes=config.num_classes,
                          dim=config.dim, depth=config.depth, heads=config.heads, mlp_dim=config.mlp_dim,
                          channels=config.channels, dim_head=config.dim_head)
        return Built(model.to(device), _version("vit-pytorch"), "vit_pytorch.SimpleViT, own init")
    from vit_pytorch import ViT

    model = ViT(image_size=config.img_size, patch_size=config.patch_size, num_classes=config.num_classes,
                dim=config.embed_dim, depth=config.depth, heads=config.num_heads,
                mlp_dim=int(config.embed_dim * config.mlp_ratio), pool=_vit_pytorch_pool(config),
                channels=config.in_chans, dim_head=config.embed_dim // config.num_heads)
    notes = "vit_pytorch.ViT, own init; patches by LayerNorm-Linear-LayerNorm (not a conv), qkv without bias"
    return Built(model.to(device), _version("vit-pytorch"), notes)


def check_vit_pytorch_flash(config: ModelConfig, grad_checkpointing: int) -> None:
    if not isinstance(config, SimpleViTConfig):
        raise Unsupported("vit-pytorch's simple_flash_attn_vit builds SimpleViT only")
    check_vit_pytorch(config, grad_checkpointing)


def build_vit_pytorch_flash(config: SimpleViTConfig, device: torch.device, grad_checkpointing: int) -> Built:
    """lucidrains' `simple_flash_attn_vit.SimpleViT` (SDPA attention, norm after pooling)."""
    from vit_pytorch.simple_flash_attn_vit import SimpleViT

    model = SimpleViT(image_size=config.image_size, patch_size=config.patch_size, num_classes=config.num_classes,
                      dim=config.dim, depth=config.depth, heads=config.heads, mlp_dim=config.mlp_dim,
                      channels=config.channels, dim_head=config.dim_head, use_flash=True)
    return Built(model.to(device), _version("vit-pytorch"), "simple_flash_attn_vit.SimpleViT, own init")


# -- Hugging Face transformers --------------------------------------------------------------------


def _hf_siglip(config: ViTConfig) -> bool:
    return config.global_pool == "map" and not config.class_token


def check_hf(config: ModelConfig, grad_checkpointing: int) -> None:
    if not isinstance(config, ViTConfig):
        raise Unsupported("Hugging Face transformers has no SimpleViT")
    _require({
        "this activation (HF takes gelu or gelu_tanh)": config.act_layer in ("gelu", "gelu_tanh"),
        "this MLP or norm": (config.mlp_layer, config.norm_layer) == ("mlp", "layernorm"),
        "register tokens, LayerScale, qk-norm or a pre-norm": not (config.reg_tokens or config.init_values
                                                                   or config.qk_norm or config.norm_pre),
        "post-norm blocks or select_layer": config.pre_norm and config.select_layer == -1,
        "non-square images": config.img_size[0] == config.img_size[1] and config.patch_size[0] == config.patch_size[1],
        "this position embedding": config.pos_embed == "learn",
    }, "Hugging Face transformers")
    if _hf_siglip(config):
        _require({"a classifier on the MAP head": config.num_classes == 0}, "transformers SiglipVisionModel")
    else:
        _require({
            "this pooling (HF ViT pools the class token)": config.class_token and config.global_pool == "token"
            and not config.no_embed_class and not config.use_fc_norm,
            "qkv or projection without bias": config.qkv_bias and config.proj_bias,
        }, "transformers ViT")
    _whole_checkpointing(config.depth, grad_checkpointing, "transformers")


def build_hf(config: ViTConfig, device: torch.device, grad_checkpointing: int) -> Built:
    """transformers' `ViTForImageClassification`/`ViTModel` (class token) or `SiglipVisionModel` (MAP head)."""
    common = dict(
        hidden_size=config.embed_dim, num_hidden_layers=config.depth, num_attention_heads=config.num_heads,
        intermediate_size=int(config.embed_dim * config.mlp_ratio), num_channels=config.in_chans,
        image_size=config.img_size[0], patch_size=config.patch_size[0], layer_norm_eps=config.norm_eps,
        hidden_act="gelu" if config.act_layer == "gelu" else "gelu_pytorch_tanh",
    )
    if _hf_siglip(config):
        from transformers import SiglipVisionConfig, SiglipVisionModel

        model = SiglipVisionModel(SiglipVisionConfig(**common, vision_use_head=True))
        pick, name = (lambda out: out.pooler_output), "SiglipVisionModel"
    else:
        from transformers import ViTConfig as HFViTConfig
        from transformers import ViTForImageClassification, ViTModel

        hf_config = HFViTConfig(**common, qkv_bias=True, num_labels=max(config.num_classes, 1))
        if config.num_classes:
            model = ViTForImageClassification(hf_config)
            pick, name = (lambda out: out.logits), "ViTForImageClassification"
        else:
            model = ViTModel(hf_config, add_pooling_layer=False)
            pick, name = (lambda out: out.last_hidden_state), "ViTModel"
    if grad_checkpointing:
        model.gradient_checkpointing_enable()
    notes = f"{name} (attn_implementation={model.config._attn_implementation}), own init"
    return Built(_Output(model, pick).to(device), _version("transformers"), notes)


@dataclass(frozen=True)
class Peer:
    """A library vitkit is compared against: its import name, what it can build (checked without importing
    it: `check` raises Unsupported), and its builder."""

    name: str
    module: str
    dist: str
    check: Callable[[ModelConfig, int], None]
    build: Callable[[ModelConfig, torch.device, int], Built]

    def skip_reason(self, config: ModelConfig, grad_checkpointing: int) -> str | None:
        """Why this peer cannot run `config` here (not installed, or cannot express it), else None."""
        if importlib.util.find_spec(self.module) is None:
            return f"{self.dist} is not installed; fix: pip install {self.dist}"
        try:
            self.check(config, grad_checkpointing)
        except Unsupported as err:
            return str(err)
        return None


PEERS: dict[str, Peer] = {
    "timm": Peer("timm", "timm", "timm", check_timm, build_timm),
    "vit-pytorch": Peer("vit-pytorch", "vit_pytorch", "vit-pytorch", check_vit_pytorch, build_vit_pytorch),
    "vit-pytorch-flash": Peer("vit-pytorch-flash", "vit_pytorch", "vit-pytorch", check_vit_pytorch_flash,
                              build_vit_pytorch_flash),
    "hf": Peer("hf", "transformers", "transformers", check_hf, build_hf),
}
