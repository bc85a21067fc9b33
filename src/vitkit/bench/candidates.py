"""What gets benchmarked: vitkit on one attention backend, or a peer library building the same architecture.

Every builder takes a vitkit config and the worker's orders and returns a module mapping images (B, C, H, W) to one
tensor. A peer that cannot express the config, or run the orders here, raises `Unsupported` with the reason, and its
row is skipped. timm shares vitkit's state-dict layout, so its model runs on vitkit's very weights (a strict load also
proves the two architectures are the same), and onnxruntime runs vitkit's model as `vitkit export` writes it; the
others run their own initialisation of the same shapes.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attention import BACKENDS, Request, choose
from ..attention.capability import cuda_capability
from ..checkpoints.eva import timm_eva_args, to_timm_eva
from ..checkpoints.export import hf_siglip_config, hf_vit_config, timm_layers, timm_model_args
from ..choices import DEFAULT_OPSET
from ..models import build_model
from ..models.config import ViTConfig
from ..runtime import INFERENCE_PRECISIONS, precision_dtype, without_log_message
from .flops import model_shape
from .spec import MODES, CandidateSpec


def image_shape(config: ViTConfig) -> tuple[int, int, int]:
    """(channels, height, width) of the images the model takes."""
    return (config.in_chans, *config.img_size)


class Unsupported(Exception):
    """This candidate cannot build or run this configuration here; the message says why."""


@dataclass
class Built:
    """A candidate's model, ready to time, and how to describe it."""

    model: nn.Module
    library: str  # "timm 1.0.31"
    notes: str = ""
    # False for a runtime outside torch (onnxruntime): built at the orders' precision, it is not prepared,
    # compiled or FLOP-counted by torch, and `params` says how many weights it carries
    in_torch: bool = True
    params: int | None = None


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


def compute_dtype(precision: str, mode: str) -> torch.dtype:
    """What `mode`'s matrix products run in at the inference precision `precision` (training: its autocast one)."""
    chosen = INFERENCE_PRECISIONS[precision]
    return chosen.compute if mode == "infer" else precision_dtype(chosen.training)


def vitkit_attention(config: ViTConfig, attention: str, device: torch.device, dtype: torch.dtype,
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


def build_vitkit(config: ViTConfig, device: torch.device, attention: str, grad_checkpointing: int) -> Built:
    """vitkit's model for `config` with its attention on `attention`, recomputing the first N blocks."""
    if grad_checkpointing:
        config = config.replace(num_recomputing_layers=grad_checkpointing)
    from .. import __version__

    model = build_model(config).to(device)
    model.set_attention(attention)
    return Built(model, f"vitkit {__version__}")


# -- timm -----------------------------------------------------------------------------------------


def check_timm(config: ViTConfig, spec: CandidateSpec) -> None:
    _exportable(timm_eva_args if config.rope != "none" else timm_model_args, config)
    _require({"ignore_head": not config.ignore_head}, "timm's VisionTransformer")
    _whole_checkpointing(config.depth, spec.grad_checkpointing, "timm")


def _exportable(export: Callable[[ViTConfig], dict], config: ViTConfig) -> dict:
    """What vitkit's exporter writes for a peer library (the same rules say what it can build)."""
    try:
        return export(config)
    except ValueError as err:
        raise Unsupported(str(err)) from err


def _timm_kwargs(cfg: ViTConfig) -> dict:
    """The exporter's timm arguments with the layers as objects, plus the dropout rates a training step uses."""
    layers = {}
    for arg, (path, bound) in timm_layers(cfg).items():
        module, name = path.rsplit(".", 1)
        layer = getattr(importlib.import_module(module), name)
        layers[arg] = functools.partial(layer, **bound) if bound else layer
    return dict(
        timm_model_args(cfg), **layers, weight_init="skip", drop_rate=cfg.head_drop_rate,
        pos_drop_rate=cfg.drop_rate if cfg.pos_drop_rate is None else cfg.pos_drop_rate,
        proj_drop_rate=cfg.drop_rate if cfg.proj_drop_rate is None else cfg.proj_drop_rate,
        attn_drop_rate=cfg.attn_drop_rate, drop_path_rate=cfg.drop_path_rate,
    )


def _eva_kwargs(cfg: ViTConfig) -> dict:
    """timm Eva's arguments for a RoPE tower, with its norm layer and the dropout rates a training step uses."""
    from timm.layers import LayerNorm

    return dict(
        timm_eva_args(cfg), norm_layer=functools.partial(LayerNorm, eps=cfg.norm_eps), drop_rate=cfg.head_drop_rate,
        pos_drop_rate=cfg.drop_rate if cfg.pos_drop_rate is None else cfg.pos_drop_rate,
        proj_drop_rate=cfg.drop_rate if cfg.proj_drop_rate is None else cfg.proj_drop_rate,
        attn_drop_rate=cfg.attn_drop_rate, drop_path_rate=cfg.drop_path_rate,
    )


def build_timm(config: ViTConfig, device: torch.device, spec: CandidateSpec) -> Built:
    """timm's `VisionTransformer` (its `Eva` for RoPE towers) with the same arguments, carrying vitkit's weights
    (strict load)."""
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    rope = config.rope != "none"
    with torch.device("meta"):  # no memory: the parameters below are vitkit's own tensors
        model = Eva(**_eva_kwargs(config)) if rope else TimmViT(**_timm_kwargs(config))
    weights = build_model(config).to(device).state_dict()
    if rope:
        weights = to_timm_eva(weights, config.key_bias)
        model.to_empty(device=device)  # Eva's buffers (RoPE tables, zero key bias) are made, not loaded
        for module in model.modules():
            if hasattr(module, "init_non_persistent_buffers"):
                module.init_non_persistent_buffers()
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as err:
        raise Unsupported(f"timm's model differs from vitkit's: {str(err).splitlines()[0]}") from err
    model.set_grad_checkpointing(spec.grad_checkpointing > 0)
    notes = "timm.models.eva.Eva, vitkit's weights renamed" if rope else "vitkit's weights (identical state dict)"
    return Built(model, _version("timm"), notes)


# -- vit-pytorch ----------------------------------------------------------------------------------


def is_simple_vit(config: ViTConfig) -> bool:
    """Whether `config` is a SimpleViT: LayerNorm-Linear-LayerNorm patches, sin-cos positions, no class token, mean
    pooling, attention without biases (vit-pytorch builds it as `SimpleViT`, its other models as `ViT`)."""
    return (config.patch_embed, config.pos_embed, config.global_pool) == ("norm_linear_norm", "sincos", "avg") and not (
        config.class_token or config.reg_tokens or config.qkv_bias or config.proj_bias)


def check_vit_pytorch(config: ViTConfig, spec: CandidateSpec) -> None:
    if spec.grad_checkpointing:
        raise Unsupported("vit-pytorch has no gradient checkpointing")
    layers = (config.act_layer, config.mlp_layer, config.norm_layer)
    common = {
        "post-norm blocks or select_layer": config.pre_norm and config.select_layer == -1,
        f"{'/'.join(layers)} (it has gelu/mlp/layernorm)": layers == ("gelu", "mlp", "layernorm"),
        "LayerScale, qk-norm or a pre-norm": config.init_values is None and not (config.qk_norm or config.norm_pre),
    }
    if is_simple_vit(config):
        _require({**common, "a classifier (num_classes > 0)": config.num_classes > 0}, "vit-pytorch SimpleViT")
        return
    _require({
        "this pooling (it pools the class token or the mean)": _vit_pytorch_pool(config) is not None,
        "register tokens": config.reg_tokens == 0,
        "this position embedding": config.pos_embed == "learn" and not config.no_embed_class,
        **common,
    }, "vit-pytorch ViT")


def _vit_pytorch_pool(config: ViTConfig) -> str | None:
    if config.class_token and config.global_pool == "token":
        return "cls"
    return "mean" if not config.class_token and config.global_pool == "avg" else None


def _vit_pytorch_args(config: ViTConfig) -> dict:
    """The shape arguments vit-pytorch's models share, in its names."""
    return dict(image_size=config.img_size, patch_size=config.patch_size, num_classes=config.num_classes,
                dim=config.embed_dim, depth=config.depth, heads=config.num_heads, mlp_dim=config.mlp_width,
                channels=config.in_chans, dim_head=config.head_dim or config.embed_dim // config.num_heads)


def build_vit_pytorch(config: ViTConfig, device: torch.device, spec: CandidateSpec) -> Built:
    """lucidrains' `SimpleViT` for SimpleViT configs, its `ViT` (closest shapes) for others."""
    if is_simple_vit(config):
        from vit_pytorch import SimpleViT

        model = SimpleViT(**_vit_pytorch_args(config))
        return Built(model.to(device), _version("vit-pytorch"), "vit_pytorch.SimpleViT, own init")
    from vit_pytorch import ViT

    model = ViT(**_vit_pytorch_args(config), pool=_vit_pytorch_pool(config))
    notes = "vit_pytorch.ViT, own init; patches by LayerNorm-Linear-LayerNorm (not a conv), qkv without bias"
    return Built(model.to(device), _version("vit-pytorch"), notes)


def check_vit_pytorch_flash(config: ViTConfig, spec: CandidateSpec) -> None:
    if not is_simple_vit(config):
        raise Unsupported("vit-pytorch's simple_flash_attn_vit builds SimpleViT only")
    check_vit_pytorch(config, spec)


def build_vit_pytorch_flash(config: ViTConfig, device: torch.device, spec: CandidateSpec) -> Built:
    """lucidrains' `simple_flash_attn_vit.SimpleViT` (SDPA attention, norm after pooling)."""
    from vit_pytorch.simple_flash_attn_vit import SimpleViT

    model = SimpleViT(**_vit_pytorch_args(config), use_flash=True)
    return Built(model.to(device), _version("vit-pytorch"), "simple_flash_attn_vit.SimpleViT, own init")


# -- Hugging Face transformers --------------------------------------------------------------------


def _hf_config(config: ViTConfig) -> dict:
    """The config.json vitkit's exporter writes for `config`: SiglipVisionModel without a class token, else ViT."""
    return _exportable(hf_vit_config if config.class_token else hf_siglip_config, config)


def check_hf(config: ViTConfig, spec: CandidateSpec) -> None:
    if not _hf_config(config)["architectures"][0].startswith("ViT"):
        _require({"a MAP head (SiglipVisionModel has no other pooled output)": config.global_pool == "map"},
                 "transformers SiglipVisionModel")
    _whole_checkpointing(config.depth, spec.grad_checkpointing, "transformers")


def build_hf(config: ViTConfig, device: torch.device, spec: CandidateSpec) -> Built:
    """transformers' `ViTForImageClassification`/`ViTModel` (class token) or `SiglipVisionModel` (MAP head), from
    the config.json the exporter writes."""
    import transformers

    hf = _hf_config(config)
    name = hf["architectures"][0]
    config_class = transformers.SiglipVisionConfig if name == "SiglipVisionModel" else transformers.ViTConfig
    picks: dict[str, Callable[[Any], torch.Tensor]] = {
        "SiglipVisionModel": lambda out: out.pooler_output,
        "ViTForImageClassification": lambda out: out.logits,
        "ViTModel": lambda out: out.last_hidden_state,
    }
    extra = {"add_pooling_layer": False} if name == "ViTModel" else {}
    model = getattr(transformers, name)(config_class.from_dict(hf), **extra)
    if spec.grad_checkpointing:
        model.gradient_checkpointing_enable()
    notes = f"{name} (attn_implementation={model.config._attn_implementation}), own init"
    return Built(_Output(model, picks[name]).to(device), _version("transformers"), notes)


# -- onnxruntime ----------------------------------------------------------------------------------

ORT_PRECISIONS = ("fp32", "int8")  # its CPU provider's: fp32, and int8 weights by dynamic quantization


def check_onnxruntime(config: ViTConfig, spec: CandidateSpec) -> None:
    if torch.device(spec.device).type != "cpu":
        raise Unsupported("the onnxruntime peer runs on the CPU (its CUDA provider is another package, "
                          "onnxruntime-gpu)")
    if spec.precision not in ORT_PRECISIONS:
        raise Unsupported(f"onnxruntime's CPU provider runs {' and '.join(ORT_PRECISIONS)}, not {spec.precision}")


class OnnxRuntimeModel(nn.Module):
    """An onnxruntime session as a module: images (B, C, H, W) in, the exported model's output out."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: images.numpy()})[0])


def _quantize_int8(path: Path) -> Path:
    """onnxruntime's dynamic quantization of `path`: int8 weights, activations quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name(f"{path.stem}.int8.onnx")
    # its advice (on the root logger) to pre-process first: measured to change neither speed nor accuracy here
    with without_log_message("", "Please consider to run pre-processing before quantization"):
        quantize_dynamic(path, quantized, weight_type=QuantType.QInt8)
    return quantized


def _export_onnx(model: nn.Module, images: torch.Tensor, path: Path) -> None:
    """`model` (eval, float32) as ONNX at `path` for batches shaped like `images`, by torch's dynamo exporter at
    the opset `vitkit export` uses (the deploy room's checked export is a sibling room's, not the bench's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the exporter's notes on opset conversion
        program = torch.onnx.export(model, (images,), None, dynamo=True, opset_version=DEFAULT_OPSET,
                                    input_names=["images"], verbose=False)
    program.save(path)


def build_onnxruntime(config: ViTConfig, device: torch.device, spec: CandidateSpec) -> Built:
    """vitkit's model exported to ONNX (dynamo exporter, the batch's shape) and run by onnxruntime's CPU provider
    on torch's thread count, its threads released when a run ends; at int8 quantized by onnxruntime's
    quantize_dynamic. Its output is checked against vitkit's on a batch like the timed one."""
    import onnxruntime

    model = build_model(config).eval()
    images = torch.randn((spec.batch_size, *image_shape(config)), generator=torch.Generator().manual_seed(spec.seed))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.force_spinning_stop", "1")  # the cores free for what runs next
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        try:
            _export_onnx(model, images, path)
        except ImportError as err:
            raise Unsupported(f"exporting to ONNX needs {err.name}; fix: pip install 'vitkit[export]'") from err
        if spec.precision == "int8":
            path = _quantize_int8(path)
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ort_model = OnnxRuntimeModel(session)  # the session holds the model: the folder may go
    with torch.inference_mode():
        diff = (ort_model(images) - model(images)).abs().max().item()
    notes = f"vitkit's weights exported to ONNX, max |diff| to vitkit {diff:.1e}"
    if spec.precision == "int8":
        notes += " (int8 by onnxruntime.quantization.quantize_dynamic)"
    return Built(ort_model, _version("onnxruntime"), notes, in_torch=False,
                 params=sum(p.numel() for p in model.parameters()))


@dataclass(frozen=True)
class Peer:
    """A library vitkit is compared against: its import name, what it can build and run (checked without
    importing it: `check` raises Unsupported), the modes it has, and its builder."""

    name: str
    module: str
    dist: str
    check: Callable[[ViTConfig, CandidateSpec], None]
    build: Callable[[ViTConfig, torch.device, CandidateSpec], Built]
    modes: tuple[str, ...] = MODES

    def skips(self, config: ViTConfig, spec: CandidateSpec) -> dict[str, str]:
        """The modes of `spec` this peer cannot run here (not installed, cannot express the model, no such
        mode), each with why."""
        why = None
        if importlib.util.find_spec(self.module) is None:
            why = f"{self.dist} is not installed; fix: pip install {self.dist}"
        else:
            try:
                self.check(config, spec)
            except Unsupported as err:
                why = str(err)
        if why is not None:
            return dict.fromkeys(spec.modes, why)
        return {mode: f"{self.dist} runs {' and '.join(self.modes)} only" for mode in spec.modes
                if mode not in self.modes}


PEERS: dict[str, Peer] = {
    "timm": Peer("timm", "timm", "timm", check_timm, build_timm),
    "vit-pytorch": Peer("vit-pytorch", "vit_pytorch", "vit-pytorch", check_vit_pytorch, build_vit_pytorch),
    "vit-pytorch-flash": Peer("vit-pytorch-flash", "vit_pytorch", "vit-pytorch", check_vit_pytorch_flash,
                              build_vit_pytorch_flash),
    "hf": Peer("hf", "transformers", "transformers", check_hf, build_hf),
    "onnxruntime": Peer("onnxruntime", "onnxruntime", "onnxruntime", check_onnxruntime, build_onnxruntime,
                        modes=("infer",)),
}
