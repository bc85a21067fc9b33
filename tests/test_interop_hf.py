"""Hugging Face checkpoints into vitkit, each saved with `save_pretrained` from a small random model:
ViTForImageClassification, SiglipVisionModel (incl. interpolate_pos_encoding at a non-native, non-square
size), a full SiglipModel, CLIPVisionModel(WithProjection), and transformers 5 in-memory state dicts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as hf

import vitkit
from interop_helpers import assert_close, images, randomize_
from vitkit.checkpoints import load_checkpoint

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
             patch_size=8)


def saved(model: torch.nn.Module, tmp_path: Path) -> Path:
    model.save_pretrained(tmp_path)
    return tmp_path


def test_hf_vit_for_image_classification(tmp_path: Path) -> None:
    torch.manual_seed(0)
    theirs = randomize_(hf.ViTForImageClassification(hf.ViTConfig(**SMALL, num_labels=7)))
    loaded = load_checkpoint(saved(theirs, tmp_path))
    mine = loaded.model
    assert loaded.source_format == "hf-vit" and loaded.report.clean and not loaded.assumed
    assert (mine.config.norm_eps, mine.config.num_classes, mine.config.act_layer) == (1e-12, 7, "gelu")
    x = images()
    with torch.no_grad():
        out = theirs(x, output_hidden_states=True)
        assert_close(mine(x), out.logits)
        assert_close(mine.forward_features(x), theirs.vit(x).last_hidden_state)
        for h_mine, h_theirs in zip(mine.forward_hidden_states(x), out.hidden_states, strict=True):
            assert_close(h_mine, h_theirs)


def test_hf_vit_model_drops_its_pooler(tmp_path: Path) -> None:
    torch.manual_seed(0)
    theirs = randomize_(hf.ViTModel(hf.ViTConfig(**SMALL)))
    loaded = load_checkpoint(saved(theirs, tmp_path))
    assert any("pooler" in d for d in loaded.report.dropped) and loaded.report.clean
    x = images()
    with torch.no_grad():
        assert_close(loaded.model.forward_features(x), theirs(x).last_hidden_state)


def test_hf_siglip_vision_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    theirs = randomize_(hf.SiglipVisionModel(hf.SiglipVisionConfig(**SMALL)))
    mine = vitkit.load_pretrained(saved(theirs, tmp_path))
    assert (mine.config.act_layer, mine.config.global_pool, mine.config.class_token) == ("gelu_tanh", "map", False)
    x = images()
    with torch.no_grad():
        out = theirs(x)
        assert_close(mine(x), out.pooler_output)
        assert_close(mine.forward_features(x), out.last_hidden_state)


@pytest.mark.parametrize("how", ["dynamic_img_size", "img_size"])
def test_hf_siglip_interpolate_pos_encoding_non_native_non_square(tmp_path: Path, how: str) -> None:
    """HF resamples without antialias; vitkit's converted config says so, on the fly or at load time."""
    torch.manual_seed(0)
    theirs = randomize_(hf.SiglipVisionModel(hf.SiglipVisionConfig(**SMALL)))
    x = images(height=48, width=72)
    kwargs = {"dynamic_img_size": True} if how == "dynamic_img_size" else {"img_size": (48, 72)}
    mine = vitkit.load_pretrained(saved(theirs, tmp_path), **kwargs)
    assert not mine.config.pos_embed_antialias
    with torch.no_grad():
        out = theirs(x, interpolate_pos_encoding=True)
        assert_close(mine.forward_features(x), out.last_hidden_state)
        assert_close(mine(x), out.pooler_output)


def test_hf_siglip_full_model_keeps_the_vision_tower(tmp_path: Path) -> None:
    torch.manual_seed(0)
    text = hf.SiglipTextConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                               vocab_size=64, max_position_embeddings=16)
    theirs = randomize_(hf.SiglipModel(hf.SiglipConfig(text_config=text.to_dict(),
                                                       vision_config=hf.SiglipVisionConfig(**SMALL).to_dict())))
    loaded = load_checkpoint(saved(theirs, tmp_path))
    assert loaded.source_format == "hf-siglip" and any("text tower" in d for d in loaded.report.dropped)
    x = images()
    with torch.no_grad():
        assert_close(loaded.model(x), theirs.vision_model(x).pooler_output)


def test_hf_clip_vision_model_pre_norm_quick_gelu(tmp_path: Path) -> None:
    """CLIP: ln_pre -> norm_pre, QuickGELU, eps 1e-5; HF's last_hidden_state has no final norm, its pooled
    output is the normed class token, and hidden_states[0] is after ln_pre."""
    torch.manual_seed(0)
    theirs = randomize_(hf.CLIPVisionModel(hf.CLIPVisionConfig(**SMALL)))
    mine = vitkit.load_pretrained(saved(theirs, tmp_path))
    assert (mine.config.act_layer, mine.config.norm_pre, mine.config.norm_eps) == ("quick_gelu", True, 1e-5)
    x = images()
    with torch.no_grad():
        out = theirs(x, output_hidden_states=True)
        assert_close(mine(x), out.pooler_output)
        hidden = mine.forward_hidden_states(x)
        assert_close(hidden[-1], out.last_hidden_state)
        for h_mine, h_theirs in zip(hidden, out.hidden_states, strict=True):
            assert_close(h_mine, h_theirs)
        assert_close(mine.forward_intermediates(x, indices=[0], output_fmt="NLC", intermediates_only=True)[0],
                     out.hidden_states[1][:, 1:])


def test_hf_clip_with_projection_and_interpolation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    theirs = randomize_(hf.CLIPVisionModelWithProjection(hf.CLIPVisionConfig(**SMALL, projection_dim=16)))
    mine = vitkit.load_pretrained(saved(theirs, tmp_path), dynamic_img_size=True)
    assert mine.config.num_classes == 16
    for x in (images(), images(height=40, width=56)):
        with torch.no_grad():
            assert_close(mine(x), theirs(x, interpolate_pos_encoding=True).image_embeds)


@pytest.mark.parametrize("family", ["vit", "siglip", "clip"])
def test_transformers_5_module_names(family: str) -> None:
    """`convert_state_dict` on a live transformers 5 model's state_dict (renamed modules), not a saved file."""
    torch.manual_seed(0)
    theirs = randomize_({
        "vit": lambda: hf.ViTModel(hf.ViTConfig(**SMALL), add_pooling_layer=False),
        "siglip": lambda: hf.SiglipVisionModel(hf.SiglipVisionConfig(**SMALL)),
        "clip": lambda: hf.CLIPVisionModel(hf.CLIPVisionConfig(**SMALL)),
    }[family]())
    state_dict, config = vitkit.convert_state_dict(theirs.state_dict(), meta={"config": theirs.config.to_dict()})
    mine = vitkit.build_model(config).eval()
    mine.load_state_dict(state_dict, strict=True)
    x = images()
    with torch.no_grad():
        out = theirs(x, output_hidden_states=True)
        assert_close(mine.forward_hidden_states(x)[-1], out.hidden_states[-1])
