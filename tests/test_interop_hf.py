"""Hugging Face checkpoints into vitkit, each saved with `save_pretrained` from a small model at realistic
magnitudes: ViTForImageClassification, SiglipVisionModel (incl. interpolate_pos_encoding at a non-native,
non-square size), a full SiglipModel, CLIPVisionModel(WithProjection), and transformers 5 in-memory state dicts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as hf

import vitkit
from interop_helpers import assert_close, assert_parity, images, realistic_
from vitkit.checkpoints import load_checkpoint

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
             patch_size=8)


def saved(model: torch.nn.Module, tmp_path: Path) -> Path:
    model.save_pretrained(tmp_path)
    return tmp_path


def assert_resampled_parity(mine: Callable[[torch.Tensor], torch.Tensor],
                            theirs: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    """At a size that resamples the position table: fp32 only. vitkit resamples in float32 whatever the model's
    dtype (as timm's `resample_abs_pos_embed` does), HF's `interpolate_pos_encoding` in the model's dtype, so in
    float64 the tables differ by float32 rounding and the outputs by ~1e-7 (with a dtype-keeping resample: 1e-15).
    The float64 check of the same weights runs at the native size (for a model built at the new size, whose
    table was resampled at load time: in `test_hf_siglip_vision_model`)."""
    with torch.no_grad():
        assert_close(mine(x), theirs(x))


def test_hf_vit_for_image_classification(tmp_path: Path) -> None:
    theirs = realistic_(hf.ViTForImageClassification(hf.ViTConfig(**SMALL, num_labels=7)))
    loaded = load_checkpoint(saved(theirs, tmp_path))
    mine = loaded.model
    assert loaded.source_format == "hf-vit" and loaded.report.clean
    # config.json fixes every model field; no preprocessor_config.json: the data config is HF ViT's, said so
    assert set(loaded.assumed) == {"mean", "std", "crop_pct", "interpolation"}
    assert (mine.config.norm_eps, mine.config.num_classes, mine.config.act_layer) == (1e-12, 7, "gelu")
    x = images()
    assert_parity(mine, lambda x: theirs(x).logits, x, mine, theirs)
    assert_parity(mine.forward_features, lambda x: theirs.vit(x).last_hidden_state, x, mine, theirs)
    assert_parity(lambda x: torch.stack(mine.forward_hidden_states(x)),
                  lambda x: torch.stack(theirs(x, output_hidden_states=True).hidden_states), x, mine, theirs)


def test_hf_vit_model_drops_its_pooler(tmp_path: Path) -> None:
    theirs = realistic_(hf.ViTModel(hf.ViTConfig(**SMALL)))
    loaded = load_checkpoint(saved(theirs, tmp_path))
    assert any("pooler" in d for d in loaded.report.dropped) and loaded.report.clean
    mine = loaded.model
    assert_parity(mine.forward_features, lambda x: theirs(x).last_hidden_state, images(), mine, theirs)


@pytest.mark.parametrize(("hidden_act", "act_layer"), [("gelu_pytorch_tanh", "gelu_tanh"), ("gelu", "gelu")])
def test_hf_siglip_vision_model(tmp_path: Path, hidden_act: str, act_layer: str) -> None:
    """The activation is config.json's `hidden_act` (SigLIP's default and hub configs: gelu_pytorch_tanh)."""
    theirs = realistic_(hf.SiglipVisionModel(hf.SiglipVisionConfig(**SMALL, hidden_act=hidden_act)))
    mine = vitkit.load_pretrained(saved(theirs, tmp_path))
    assert (mine.config.act_layer, mine.config.global_pool, mine.config.class_token) == (act_layer, "map", False)
    x = images()
    assert_parity(mine, lambda x: theirs(x).pooler_output, x, mine, theirs)
    assert_parity(mine.forward_features, lambda x: theirs(x).last_hidden_state, x, mine, theirs)


@pytest.mark.parametrize("mutation", [{"act_layer": "gelu"}, {"norm_eps": 1e-5}])
def test_hf_siglip_a_wrong_activation_or_eps_fails_the_check(tmp_path: Path, mutation: dict[str, Any]) -> None:
    """HF SigLIP runs GELU-tanh at eps 1e-6: vitkit given exact GELU or eps 1e-5 fails the parity check."""
    theirs = realistic_(hf.SiglipVisionModel(hf.SiglipVisionConfig(**SMALL)))
    mine = vitkit.load_pretrained(saved(theirs, tmp_path), **mutation)
    with pytest.raises(AssertionError):
        assert_parity(mine, lambda x: theirs(x).pooler_output, images(), mine, theirs)


@pytest.mark.parametrize("how", ["dynamic_img_size", "img_size"])
def test_hf_siglip_interpolate_pos_encoding_non_native_non_square(tmp_path: Path, how: str) -> None:
    """HF resamples without antialias; vitkit's converted config says so, on the fly or at load time."""
    theirs = realistic_(hf.SiglipVisionModel(hf.SiglipVisionConfig(**SMALL)))
    x = images(height=48, width=72)
    kwargs = {"dynamic_img_size": True} if how == "dynamic_img_size" else {"img_size": (48, 72)}
    mine = vitkit.load_pretrained(saved(theirs, tmp_path), **kwargs)
    assert not mine.config.pos_embed_antialias
    assert_resampled_parity(mine.forward_features,
                            lambda x: theirs(x, interpolate_pos_encoding=True).last_hidden_state, x)
    assert_resampled_parity(mine, lambda x: theirs(x, interpolate_pos_encoding=True).pooler_output, x)
    if how == "dynamic_img_size":
        assert_parity(mine, lambda x: theirs(x).pooler_output, images(), mine, theirs)


def test_hf_siglip_full_model_keeps_the_vision_tower(tmp_path: Path) -> None:
    text = hf.SiglipTextConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               vocab_size=64, max_position_embeddings=16)
    theirs = realistic_(hf.SiglipModel(hf.SiglipConfig(text_config=text.to_dict(),
                                                       vision_config=hf.SiglipVisionConfig(**SMALL).to_dict())))
    loaded = load_checkpoint(saved(theirs, tmp_path))
    assert loaded.source_format == "hf-siglip" and any("text tower" in d for d in loaded.report.dropped)
    assert_parity(loaded.model, lambda x: theirs.vision_model(x).pooler_output, images(), loaded.model, theirs)


def test_hf_clip_vision_model_pre_norm_quick_gelu(tmp_path: Path) -> None:
    """CLIP: ln_pre -> norm_pre, QuickGELU, eps 1e-5; HF's last_hidden_state has no final norm, its pooled
    output is the normed class token, and hidden_states[0] is after ln_pre."""
    theirs = realistic_(hf.CLIPVisionModel(hf.CLIPVisionConfig(**SMALL)))
    mine = vitkit.load_pretrained(saved(theirs, tmp_path))
    assert (mine.config.act_layer, mine.config.norm_pre, mine.config.norm_eps) == ("quick_gelu", True, 1e-5)
    x = images()
    assert_parity(mine, lambda x: theirs(x).pooler_output, x, mine, theirs)
    assert_parity(lambda x: mine.forward_hidden_states(x)[-1], lambda x: theirs(x).last_hidden_state, x, mine, theirs)
    assert_parity(lambda x: torch.stack(mine.forward_hidden_states(x)),
                  lambda x: torch.stack(theirs(x, output_hidden_states=True).hidden_states), x, mine, theirs)
    assert_parity(lambda x: mine.forward_intermediates(x, indices=[0], output_fmt="NLC", intermediates_only=True)[0],
                  lambda x: theirs(x, output_hidden_states=True).hidden_states[1][:, 1:], x, mine, theirs)


def test_hf_clip_with_projection_and_interpolation(tmp_path: Path) -> None:
    theirs = realistic_(hf.CLIPVisionModelWithProjection(hf.CLIPVisionConfig(**SMALL, projection_dim=16)))
    mine = vitkit.load_pretrained(saved(theirs, tmp_path), dynamic_img_size=True)
    assert mine.config.num_classes == 16
    assert_parity(mine, lambda x: theirs(x).image_embeds, images(), mine, theirs)
    assert_resampled_parity(mine, lambda x: theirs(x, interpolate_pos_encoding=True).image_embeds,
                            images(height=40, width=56))


@pytest.mark.parametrize("family", ["vit", "siglip", "clip"])
def test_transformers_5_module_names(family: str) -> None:
    """`convert_state_dict` on a live transformers 5 model's state_dict (renamed modules), not a saved file."""
    theirs = realistic_({
        "vit": lambda: hf.ViTModel(hf.ViTConfig(**SMALL), add_pooling_layer=False),
        "siglip": lambda: hf.SiglipVisionModel(hf.SiglipVisionConfig(**SMALL)),
        "clip": lambda: hf.CLIPVisionModel(hf.CLIPVisionConfig(**SMALL)),
    }[family]())
    state_dict, config = vitkit.convert_state_dict(theirs.state_dict(), meta={"config": theirs.config.to_dict()})
    mine = vitkit.build_model(config).eval()
    mine.load_state_dict(state_dict, strict=True)
    assert_parity(lambda x: mine.forward_hidden_states(x)[-1],
                  lambda x: theirs(x, output_hidden_states=True).hidden_states[-1], images(), mine, theirs)
