"""vitkit -> timm / HF SigLIP / HF ViT: the exported files load in those libraries and give the same outputs,
and vitkit -> foreign -> vitkit is exact; configs a target cannot build are refused."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import timm
import timm.layers
import torch
import transformers as hf
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn

import vitkit
from interop_helpers import assert_parity, images, realistic_
from vitkit.checkpoints import load_checkpoint
from vitkit.checkpoints.export import save_exported

SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)


def round_trip_is_exact(model: nn.Module, directory: Path) -> nn.Module:
    back = vitkit.load_pretrained(directory)
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    return back


@pytest.mark.parametrize("extra", [
    {},
    {"reg_tokens": 2, "no_embed_class": True, "init_values": 0.5, "global_pool": "avg"},
    {"mlp_layer": "swiglu_packed", "act_layer": "silu", "norm_eps": 1e-5, "class_token": False, "global_pool": "map"},
])
def test_timm_export_loads_in_timm(tmp_path: Path, extra: dict) -> None:
    model = realistic_(vitkit.VisionTransformer(**SMALL, num_classes=5, **extra))
    save_exported(model, tmp_path, to="timm")
    exported = json.loads((tmp_path / "timm_args.json").read_text())
    objects = {"mlp_layer": timm.layers.SwiGLUPacked,
               "norm_layer": functools.partial(nn.LayerNorm, eps=model.config.norm_eps)}
    theirs = TimmViT(**exported["model_args"], **{k: objects[k] for k in exported["objects"]}).eval()
    theirs.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    x = images()
    assert_parity(model, theirs, x, model, theirs)
    back = round_trip_is_exact(model, tmp_path)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_hf_siglip_export_loads_with_from_pretrained(tmp_path: Path) -> None:
    model = realistic_(vitkit.create_model("siglip_base_patch16_224", **SMALL))
    assert save_exported(model, tmp_path, to="hf")[1].name == "config.json"  # 'hf' picks SigLIP: no class token
    theirs = hf.SiglipVisionModel.from_pretrained(tmp_path).eval()
    x = images()
    assert_parity(model, lambda x: theirs(x).pooler_output, x, model, theirs)
    assert_parity(model.forward_features, lambda x: theirs(x).last_hidden_state, x, model, theirs)
    back = round_trip_is_exact(model, tmp_path)
    assert (back.config.act_layer, back.config.global_pool) == (model.config.act_layer, "map")


@pytest.mark.parametrize("num_classes", [6, 0])
def test_hf_vit_export_loads_with_from_pretrained(tmp_path: Path, num_classes: int) -> None:
    model = realistic_(vitkit.VisionTransformer(**SMALL, num_classes=num_classes, norm_eps=1e-12))
    save_exported(model, tmp_path, to="hf-vit")
    x = images()
    if num_classes:
        theirs = hf.ViTForImageClassification.from_pretrained(tmp_path).eval()
        assert_parity(model, lambda x: theirs(x).logits, x, model, theirs)
    else:
        theirs = hf.ViTModel.from_pretrained(tmp_path, add_pooling_layer=False).eval()
        assert_parity(model.forward_features, lambda x: theirs(x).last_hidden_state, x, model, theirs)
    round_trip_is_exact(model, tmp_path)


def test_converted_peer_exports_back_to_its_own_layout(tmp_path: Path) -> None:
    """HF SigLIP -> vitkit -> HF SigLIP gives back the same tensors under the same names."""
    theirs = realistic_(hf.SiglipVisionModel(hf.SiglipVisionConfig(hidden_size=64, num_hidden_layers=2,
                                                                   num_attention_heads=4, intermediate_size=128,
                                                                   image_size=32, patch_size=8)))
    theirs.save_pretrained(tmp_path / "hf")
    save_exported(vitkit.load_pretrained(tmp_path / "hf"), tmp_path / "again", to="hf-siglip")
    original, again = load_file(str(tmp_path / "hf" / "model.safetensors")), load_file(
        str(tmp_path / "again" / "model.safetensors"))
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k], again[k]) for k in original)


@pytest.mark.parametrize(("to", "model_kwargs", "match"), [
    ("hf-siglip", {"class_token": True}, "no class token"),
    ("hf-vit", {"init_values": 0.1}, "LayerScale"),
    ("hf-vit", {"img_size": (32, 48)}, "square"),
    ("timm", {"pre_norm": False}, "pre-norm"),
    ("timm", {"patch_embed": "norm_linear_norm"}, "conv patch embedding"),
    ("onnx", {}, "unknown export format"),
])
def test_exports_refuse_what_the_target_cannot_build(tmp_path: Path, to: str, model_kwargs: dict, match: str) -> None:
    model = vitkit.VisionTransformer(**{**SMALL, "num_classes": 0, **model_kwargs})
    with pytest.raises(ValueError, match=match):
        save_exported(model, tmp_path, to=to)
    assert not any(tmp_path.iterdir())


def test_simple_vit_exports_only_as_vitkit(tmp_path: Path) -> None:
    """Neither timm nor HF builds LayerNorm-Linear-LayerNorm patches or fixed sin-cos positions."""
    model = vitkit.SimpleViT(image_size=16, patch_size=4, num_classes=3, dim=32, depth=1, heads=2, mlp_dim=64)
    for to in ("timm", "hf-vit"):
        with pytest.raises(ValueError, match=r"a conv patch embedding \(patch_embed='conv'\)"):
            save_exported(model, tmp_path, to=to)
    save_exported(model, tmp_path, to="vitkit")
    assert load_checkpoint(tmp_path).source_format == "vitkit"
