"""Every converter's data config (mean, std, crop_pct, interpolation): read from the JSON files that come with the
weights where they state it (timm's config.json `pretrained_cfg`, HF's preprocessor_config.json, OpenCLIP's
`preprocess_cfg`), else the family's published values; `assumed` lists exactly the fields that were not read.

Each format's real peer is built small with random weights (timm, transformers, open_clip, vit-pytorch) or its layout
written from one (DINOv2 / DINOv3 originals, big_vision .npz). The stated values are no family's (mean 0.1 ..., the
other interpolation than the family's, crop 0.8 where the source can state a crop), so a hard-coded default fails."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import pytest
import timm
import torch
import transformers as hf
import vit_pytorch
from safetensors.torch import save_file
from timm.models._hub import save_for_hf
from timm.models.vision_transformer import VisionTransformer as TimmViT
from transformers.image_utils import PILImageResampling

import vitkit
from test_interop_big_vision import write_npz
from test_interop_clip import TEXT, VISION, small_b32
from test_interop_dinov2 import original_layout
from test_qwen_vl import hf_tower
from test_rope import hf_dinov3, to_original
from vitkit.checkpoints import load_checkpoint
from vitkit.models import ViTConfig

DATA = ("mean", "std", "crop_pct", "interpolation")
MEAN, STD = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)
HALF = (0.5, 0.5, 0.5)
IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CLIP = dict(mean=tuple(open_clip.OPENAI_DATASET_MEAN), std=tuple(open_clip.OPENAI_DATASET_STD))
OTHER = {"bicubic": "bilinear", "bilinear": "bicubic"}  # an interpolation that is not the family's
RESAMPLE = {"bilinear": PILImageResampling.BILINEAR, "bicubic": PILImageResampling.BICUBIC}

# The families' published values (vitkit.checkpoints.data_configs.FAMILIES), written out.
AUGREG = dict(mean=HALF, std=HALF, crop_pct=0.9, interpolation="bicubic")
NAFLEX = dict(mean=HALF, std=HALF, crop_pct=1.0, interpolation="bilinear")
DEEPSEEK_VL2 = dict(mean=HALF, std=HALF, crop_pct=1.0, interpolation="bicubic")
OPEN_CLIP = dict(**CLIP, crop_pct=1.0, interpolation="bicubic")
HF_VIT = dict(mean=HALF, std=HALF, crop_pct=1.0, interpolation="bilinear")
HF_CLIP = dict(**CLIP, crop_pct=1.0, interpolation="bicubic")
HF_SIGLIP = dict(mean=HALF, std=HALF, crop_pct=1.0, interpolation="bicubic")
DINOV2 = dict(**IMAGENET, crop_pct=0.875, interpolation="bicubic")
DINOV3 = dict(**IMAGENET, crop_pct=1.0, interpolation="bilinear")
TIMM_DINOV3 = dict(**IMAGENET, crop_pct=1.0, interpolation="bicubic")
TIMM_EVA02 = dict(**CLIP, crop_pct=0.9, interpolation="bicubic")
QWEN2_5_VL = dict(**CLIP, crop_pct=1.0, interpolation="bicubic")
QWEN3_VL = dict(mean=HALF, std=HALF, crop_pct=1.0, interpolation="bicubic")
BIG_VISION = dict(mean=HALF, std=HALF, crop_pct=1.0, interpolation="bilinear")
VITKIT_DEFAULTS = {f: getattr(ViTConfig(), f) for f in DATA}  # vit-pytorch publishes none


def data_of(config: ViTConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in DATA}


def assert_data(assumed: dict[str, str], config: ViTConfig, values: dict[str, Any], read: set[str]) -> None:
    """The config holds `values`, and `assumed` names each data-config field but those `read` from the files."""
    got = data_of(config)
    assert got["crop_pct"] == pytest.approx(values["crop_pct"])
    assert {**got, "crop_pct": values["crop_pct"]} == values
    assert set(assumed) & set(DATA) == set(DATA) - read


# -- sources: (weights with or without the JSON file that states a data config) -> (assumed, config) ----------------

Result = tuple[dict[str, str], ViTConfig]


def loaded(path: Path, **overrides: Any) -> Result:
    record = load_checkpoint(path, **overrides)
    return record.assumed, record.model.config


def converted(state_dict: dict[str, torch.Tensor], meta: dict[str, Any] | None = None, **overrides: Any) -> Result:
    conversion = vitkit.convert_state_dict(state_dict, meta=meta, **overrides)
    return conversion.assumed, conversion.config


def timm_dir(model: torch.nn.Module, tmp_path: Path, stated: dict[str, Any] | None) -> Path:
    """`model` saved by timm's own hub writer (config.json with `pretrained_cfg`), or its weights alone."""
    if stated is None:
        save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
        return tmp_path / "model.safetensors"
    save_for_hf(model, str(tmp_path), data_config=stated)
    return tmp_path


def hf_dir(model: torch.nn.Module, tmp_path: Path, processor: Callable[..., Any] | None,
           stated: dict[str, Any] | None, **processor_args: Any) -> Path:
    """`model.save_pretrained`, with `processor` (the image processor class) stating `stated` beside it."""
    model.save_pretrained(tmp_path)
    if stated is not None and processor is not None:
        processor(image_mean=list(stated["mean"]), image_std=list(stated["std"]),
                  resample=RESAMPLE[stated["interpolation"]], **processor_args).save_pretrained(tmp_path)
    return tmp_path


def timm_vit(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2, num_classes=5)
    return loaded(timm_dir(model, tmp_path, stated), num_heads=3)


def timm_naflex(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    model = timm.create_model("naflexvit_base_patch16_siglip", pretrained=False, depth=2, embed_dim=64, num_heads=4)
    return loaded(timm_dir(model, tmp_path, stated), num_heads=4)


def timm_eva_named(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    """A DINOv3 tower from timm's hub writer: config.json names its architecture, which vitkit registers."""
    model = timm.create_model("vit_small_patch16_dinov3", pretrained=False, depth=2, embed_dim=64, num_heads=4)
    save_for_hf(model, str(tmp_path), data_config=stated)
    config = json.loads((tmp_path / "config.json").read_text())
    if stated is None:
        config.pop("pretrained_cfg")
    return converted(model.state_dict(), {"config": config}, num_heads=4)


def timm_eva_guessed(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    """EVA-02 weights alone: the settings (and the data config) are guessed from the keys."""
    model = timm.create_model("eva02_tiny_patch14_224", pretrained=False, depth=2, embed_dim=64, num_heads=4)
    return converted(model.state_dict(), num_heads=4)


def deepseek_vl2(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    tower = timm.create_model("vit_base_patch16_siglip_224", pretrained=False, num_classes=0, img_size=36,
                              patch_size=6, embed_dim=64, depth=2, num_heads=4)
    weights = {f"vision.{k}": v for k, v in tower.state_dict().items()}
    weights["language.embed.weight"] = torch.zeros(4, 8)
    config = {"vision_config": {"image_size": 36, "patch_size": 6, "heads": 4, "global_pool": "map",
                                "class_token": False}}
    return converted(weights, {"config": config})


def preprocess_cfg(stated: dict[str, Any]) -> dict[str, Any]:
    """OpenCLIP's `preprocess_cfg`: 'squash' resizes straight to the model's size (crop_pct 1.0)."""
    return {"mean": list(stated["mean"]), "std": list(stated["std"]), "interpolation": stated["interpolation"],
            "resize_mode": "squash"}


def open_clip_timm(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    trunk = TimmViT(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=0)
    weights = {f"visual.trunk.{k}": v for k, v in trunk.state_dict().items()}
    weights.update({"visual.head.proj.weight": torch.zeros(16, 64), "text.token_embedding.weight": torch.zeros(3, 16)})
    meta = {"open_clip": {"preprocess_cfg": preprocess_cfg(stated)}} if stated else None
    return converted(weights, meta, num_heads=4)


def open_clip_vit(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    torch.save(small_b32().state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    if stated is None:
        return loaded(tmp_path / "open_clip_pytorch_model.bin", num_heads=4, act_layer="gelu")
    config = {"model_cfg": {"embed_dim": 24, "vision_cfg": VISION, "text_cfg": TEXT},
              "preprocess_cfg": preprocess_cfg(stated)}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    return loaded(tmp_path)


HF_SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
                patch_size=8)
# A processor that resizes the shorter side to 40 and centre-crops 32 (crop_pct 0.8).
CROP = dict(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, do_center_crop=True)


def hf_vit(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    model = hf.ViTModel(hf.ViTConfig(**HF_SMALL))
    return loaded(hf_dir(model, tmp_path, hf.ViTImageProcessor, stated))


def hf_siglip(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    model = hf.SiglipVisionModel(hf.SiglipVisionConfig(**HF_SMALL))
    return loaded(hf_dir(model, tmp_path, hf.SiglipImageProcessor, stated))


def hf_siglip2_naflex(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    model = hf.Siglip2VisionModel(hf.Siglip2VisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_patches=64,
        patch_size=8))
    return loaded(hf_dir(model, tmp_path, hf.Siglip2ImageProcessor, stated))


def hf_clip(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    model = hf.CLIPVisionModel(hf.CLIPVisionConfig(**HF_SMALL))
    return loaded(hf_dir(model, tmp_path, hf.CLIPImageProcessor, stated, **CROP))


def hf_dinov2(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    model = hf.Dinov2Model(hf.Dinov2Config(**{k: v for k, v in HF_SMALL.items() if k != "intermediate_size"}))
    return loaded(hf_dir(model, tmp_path, hf.BitImageProcessor, stated, **CROP))  # as facebook/dinov2-*


def dinov2_original(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=28, embed_dim=96, depth=2,
                              num_heads=4, num_classes=0)
    return converted(original_layout(model), num_heads=4)


def hf_dinov3_dir(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    _, path = hf_dinov3(tmp_path)
    if stated is not None:
        hf.DINOv3ViTImageProcessor(image_mean=list(stated["mean"]), image_std=list(stated["std"]),
                                   resample=RESAMPLE[stated["interpolation"]]).save_pretrained(path)
    return loaded(path)


def dinov3_original(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    model = timm.create_model("vit_small_patch16_dinov3_qkvb", pretrained=False, depth=2, embed_dim=64, num_heads=4)
    return converted(to_original(model.state_dict()), num_heads=4)


def vit_pytorch_vit(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    model = vit_pytorch.ViT(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4, mlp_dim=96)
    return converted(model.state_dict(), num_heads=4)


def vit_pytorch_simple(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    model = vit_pytorch.SimpleViT(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4, mlp_dim=96)
    return converted(model.state_dict(), num_heads=4, img_size=32)


def big_vision(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
    model = TimmViT(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, class_token=False,
                    global_pool="map", num_classes=0)
    return loaded(write_npz(model, tmp_path / "siglip.npz", prefix="params/img/"))


def qwen(kind: str) -> Callable[[Path, dict[str, Any] | None], Result]:
    def build(tmp_path: Path, stated: dict[str, Any] | None) -> Result:
        return loaded(hf_dir(hf_tower(kind), tmp_path, hf.Qwen2VLImageProcessor, stated))
    return build


@dataclass(frozen=True)
class Case:
    """A format's source; the family's published data config; what its JSON can state (None: it has no such file)."""

    build: Callable[[Path, dict[str, Any] | None], Result]
    family: dict[str, Any]
    crop: float | None = None  # the crop_pct the stated file gives (None: no file states one)


def stated_for(case: Case) -> dict[str, Any]:
    """Values no family has: mean / std 0.1 ..., the interpolation the family does not use, crop 0.8 (or the one
    the source's processor always keeps)."""
    return dict(mean=MEAN, std=STD, crop_pct=case.crop, interpolation=OTHER[case.family["interpolation"]])


CASES: dict[str, Case] = {
    "timm": Case(timm_vit, AUGREG, crop=0.8),
    "timm-naflex": Case(timm_naflex, NAFLEX, crop=0.8),
    "timm-eva (architecture named)": Case(timm_eva_named, TIMM_DINOV3, crop=0.8),
    "timm-eva (guessed from the keys)": Case(timm_eva_guessed, TIMM_EVA02),
    "deepseek-vl2": Case(deepseek_vl2, DEEPSEEK_VL2),
    "open_clip-timm": Case(open_clip_timm, OPEN_CLIP, crop=1.0),
    "open_clip": Case(open_clip_vit, OPEN_CLIP, crop=1.0),
    "hf-vit": Case(hf_vit, HF_VIT, crop=1.0),
    "hf-siglip": Case(hf_siglip, HF_SIGLIP, crop=1.0),
    "hf-siglip (SigLIP2 NaFlex)": Case(hf_siglip2_naflex, NAFLEX, crop=1.0),
    "hf-clip": Case(hf_clip, HF_CLIP, crop=0.8),
    "hf-dinov2": Case(hf_dinov2, DINOV2, crop=0.8),
    "dinov2": Case(dinov2_original, DINOV2),
    "hf-dinov3": Case(hf_dinov3_dir, DINOV3, crop=1.0),
    "dinov3": Case(dinov3_original, DINOV3),
    "vit-pytorch": Case(vit_pytorch_vit, VITKIT_DEFAULTS),
    "vit-pytorch-simple": Case(vit_pytorch_simple, VITKIT_DEFAULTS),
    "big_vision": Case(big_vision, BIG_VISION),
    "hf-qwen2.5-vl": Case(qwen("qwen2.5"), QWEN2_5_VL, crop=1.0),
    "hf-qwen3-vl": Case(qwen("qwen3"), QWEN3_VL, crop=1.0),
}


@pytest.mark.parametrize("name", CASES)
def test_without_a_stated_data_config_the_family_values_are_set_and_said_so(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    assumed, config = case.build(tmp_path, None)
    assert_data(assumed, config, case.family, read=set())


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.crop is not None])
def test_a_stated_data_config_is_read_and_not_listed_as_assumed(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    stated = stated_for(case)
    assumed, config = case.build(tmp_path, stated)
    assert_data(assumed, config, stated, read=set(DATA))


def test_dinov2_original_weights_get_imagenet_mean_std_and_say_so() -> None:
    """The issue's case: DINOv2 ViT-S/14 weights converted alone got ViTConfig's 0.5 mean / std, unreported."""
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=28, embed_dim=96, depth=2,
                              num_heads=4, num_classes=0)
    conversion = vitkit.convert_state_dict(original_layout(model), num_heads=4)
    assert conversion.source_format == "dinov2"
    assert (conversion.config.mean, conversion.config.std) == (IMAGENET["mean"], IMAGENET["std"])
    assert "DINOv2" in conversion.assumed["mean"] and "DINOv2" in conversion.assumed["std"]


def test_a_data_config_override_is_not_listed_as_assumed() -> None:
    model = vit_pytorch.ViT(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4, mlp_dim=96)
    conversion = vitkit.convert_state_dict(model.state_dict(), num_heads=4, mean=MEAN, crop_pct=0.8)
    assert (conversion.config.mean, conversion.config.crop_pct) == (MEAN, 0.8)
    assert set(conversion.assumed) & set(DATA) == {"std", "interpolation"}


@pytest.mark.parametrize("legacy", [False, True])
def test_timm_input_size_of_a_fixed_size_model_is_its_img_size(legacy: bool) -> None:
    """timm's `pretrained_cfg` (older files: the config itself) states the input size; a 48 x 32 table reads as
    that, not as a square grid. A model of variable input size (NaFlex) keeps its table's size."""
    model = TimmViT(img_size=(48, 32), patch_size=16, embed_dim=64, depth=1, num_heads=4, num_classes=0)
    cfg = {"input_size": [3, 48, 32], "fixed_input_size": True, "mean": list(MEAN), "std": list(STD)}
    config = {"architecture": "vit_custom", **cfg} if legacy else {"architecture": "vit_custom", "pretrained_cfg": cfg}
    conversion = vitkit.convert_state_dict(model.state_dict(), meta={"config": config}, num_heads=4)
    assert conversion.config.img_size == (48, 32) and (conversion.config.mean, conversion.config.std) == (MEAN, STD)
    assert set(conversion.assumed) & set(DATA) == {"crop_pct", "interpolation"}
    naflex = timm.create_model("naflexvit_base_patch16_siglip", pretrained=False, depth=1, embed_dim=64, num_heads=4)
    config = {"architecture": "naflexvit_base_patch16_siglip",
              "pretrained_cfg": {"input_size": [3, 384, 384], "fixed_input_size": False}}
    conversion = vitkit.convert_state_dict(naflex.state_dict(), meta={"config": config}, num_heads=4)
    assert conversion.config.img_size == (256, 256)  # its 16 x 16 table


def test_open_clip_preprocess_cfg_states_only_what_it_holds() -> None:
    """mean / std without interpolation or resize_mode: those two come from OpenCLIP's defaults, said so."""
    weights = small_b32().state_dict()
    meta = {"open_clip": {"model_cfg": {"vision_cfg": VISION}, "preprocess_cfg": {"mean": list(MEAN),
                                                                               "std": list(STD)}}}
    conversion = vitkit.convert_state_dict(weights, meta=meta)
    assert_data(conversion.assumed, conversion.config, {**OPEN_CLIP, "mean": MEAN, "std": STD}, read={"mean", "std"})
