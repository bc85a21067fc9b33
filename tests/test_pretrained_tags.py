"""Pretrained weights by name: every tag names a registered model, the timm-hosted ones state exactly what timm's
pretrained_cfg states for them, names resolve to their default tag, and a tagged name builds the model those weights
need (classes, data config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
from timm.models import get_pretrained_cfg
from typer.testing import CliRunner

import vitkit
from vitkit.checkpoints import FORMATS, PRETRAINED, get_pretrained
from vitkit.checkpoints.tags import tags_markdown
from vitkit.cli import app

TIMM_TAGS = sorted(name for name, tag in PRETRAINED.items() if tag.layout == "timm")


def test_every_tag_is_a_registered_model_in_a_known_layout() -> None:
    assert len(PRETRAINED) >= 60
    for tag in PRETRAINED.values():
        assert tag.model in vitkit.list_models(), tag.name
        assert tag.layout in FORMATS, tag.name
        assert tag.license and tag.repo.count("/") == 1 and tag.files
        assert len(tag.mean) == len(tag.std) == vitkit.models.get_config(tag.model).in_chans
    for name in ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "siglip_so400m_patch14_384.webli",
                 "vit_small_patch14_dinov2.lvd142m", "siglip_so400m_patch14_384.deepseek_vl2_tiny",
                 "siglip2_base_patch16_naflex.webli", "qwen2_5_vl_vision_7b.instruct", "qwen3_vl_vision_8b.instruct"):
        assert name in PRETRAINED


@pytest.mark.parametrize("name", TIMM_TAGS)
def test_timm_hosted_tags_state_what_timm_states(name: str) -> None:
    tag = PRETRAINED[name]
    arch = tag.repo.removeprefix("timm/")
    cfg = get_pretrained_cfg(arch).to_dict()
    assert cfg["hf_hub_id"] == tag.repo
    assert (tuple(cfg["mean"]), tuple(cfg["std"])) == (tag.mean, tag.std)
    assert cfg["input_size"][1:] == (tag.img_size, tag.img_size)
    assert (cfg["crop_pct"], cfg["interpolation"]) == (tag.crop_pct, tag.interpolation)
    assert cfg["num_classes"] == tag.num_classes
    assert cfg.get("license") == tag.license
    assert timm.is_model(arch.split(".")[0])


def test_a_name_takes_its_default_tag_and_unknown_tags_say_which_exist() -> None:
    assert get_pretrained("vit_base_patch16_224").name == "vit_base_patch16_224.augreg2_in21k_ft_in1k"
    assert get_pretrained("siglip_so400m_patch14_384").name == "siglip_so400m_patch14_384.webli"
    with pytest.raises(ValueError, match="augreg2_in21k_ft_in1k"):
        get_pretrained("vit_base_patch16_224.nope")
    with pytest.raises(ValueError, match="no published weights"):
        get_pretrained("vit_digits")
    with pytest.raises(ValueError, match="unknown model"):
        get_pretrained("vit_nothing_like_this.tag")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at vit_base_patch16_224\.safetensors"):
        vitkit.load_pretrained("vit_base_patch16_224.safetensors")  # a missing file, not a tag


def test_a_tagged_name_builds_the_model_its_weights_need() -> None:
    model = vitkit.create_model("vit_small_patch16_224.augreg_in21k", depth=1)
    assert model.num_classes == 21843 and model.config.crop_pct == 0.9
    dino = vitkit.create_model("vit_small_patch16_224.dino", depth=1)
    assert dino.num_classes == 0 and dino.config.mean == (0.485, 0.456, 0.406)
    sat = vitkit.create_model("vit_large_patch16_dinov3.sat493m", depth=1)
    assert sat.config.mean == (0.43, 0.411, 0.296) and sat.config.img_size == (256, 256)
    assert vitkit.create_model("vit_small_patch16_224.augreg_in21k", num_classes=5, depth=1).num_classes == 5
    with pytest.raises(TypeError, match="pretrained must be"):
        vitkit.create_model("vit_small_patch16_224", pretrained=3)


def test_vitkit_models_lists_the_tags_and_the_readme_table_is_generated() -> None:
    result = CliRunner().invoke(app, ["models", "--pretrained", "--json", "dinov2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "timm/vit_small_patch14_dinov2.lvd142m" in result.output
    result = CliRunner().invoke(app, ["models", "--pretrained", "nothing-matches"], env={"COLUMNS": "200"})
    assert result.exit_code != 0 and "no published weights match" in result.output
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- tags:begin -->\n", 1)[1].split("<!-- tags:end -->", 1)[0]
    assert block == tags_markdown(), "README's tag table is stale: vitkit models --pretrained --markdown makes it"
