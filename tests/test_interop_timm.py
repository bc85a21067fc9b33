"""timm-layout checkpoints into vitkit: timm ViT, timm SigLIP, registers + no_embed_class, the DeepSeek-VL2
`vision.` tower, position-table resampling at load time, saved the way timm users save them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer as TimmViT

import vitkit
from interop_helpers import assert_parity, images, realistic_
from vitkit.checkpoints import load_checkpoint

SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)


def save_timm(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def compare(theirs: torch.nn.Module, mine: torch.nn.Module, x: torch.Tensor) -> None:
    """Features and outputs, fp32 and float64 (see `assert_parity`)."""
    assert_parity(mine.forward_features, theirs.forward_features, x, mine, theirs)
    assert_parity(mine, theirs, x, mine, theirs)


def test_timm_vit_token_pool(tmp_path: Path) -> None:
    theirs = realistic_(TimmViT(**SMALL, num_classes=10))
    loaded = load_checkpoint(save_timm(theirs, tmp_path / "vit.safetensors"), num_heads=4)
    assert loaded.source_format == "timm" and loaded.report.clean
    assert "act_layer" in loaded.assumed and "norm_eps" in loaded.assumed  # timm defaults, said so
    mine = loaded.model
    assert mine.config.global_pool == "token" and mine.config.num_classes == 10 and mine.config.img_size == (32, 32)
    compare(theirs, mine, images())


def test_timm_siglip_map_head(tmp_path: Path) -> None:
    """timm's SigLIP: no class token, MAP head, exact GELU (HF's uses GELU-tanh)."""
    theirs = realistic_(timm.create_model("vit_base_patch16_siglip_224", pretrained=False, num_classes=0, **SMALL))
    mine = vitkit.load_pretrained(save_timm(theirs, tmp_path / "siglip.safetensors"), num_heads=4)
    assert mine.config.global_pool == "map" and not mine.config.class_token and mine.config.act_layer == "gelu"
    compare(theirs, mine, images())


def test_timm_registers_no_embed_class_layerscale_any_size(tmp_path: Path) -> None:
    kwargs = dict(SMALL, img_size=48, reg_tokens=3, no_embed_class=True, init_values=0.1, dynamic_img_size=True,
                  num_classes=5)
    theirs = realistic_(TimmViT(**kwargs))
    mine = vitkit.load_pretrained(save_timm(theirs, tmp_path / "reg.safetensors"), num_heads=4,
                                  dynamic_img_size=True)
    assert (mine.config.reg_tokens, mine.config.no_embed_class, mine.config.img_size) == (3, True, (48, 48))
    assert mine.config.init_values is not None
    compare(theirs, mine, images(height=48, width=48))
    compare(theirs, mine, images(height=40, width=64))  # both resample the table on the fly, the same way


def test_img_size_resamples_the_table_like_timm(tmp_path: Path) -> None:
    theirs = realistic_(TimmViT(**SMALL, num_classes=3, dynamic_img_size=True))
    mine = vitkit.load_pretrained(save_timm(theirs, tmp_path / "vit.safetensors"), num_heads=4, img_size=(40, 56))
    assert mine.pos_embed.shape == (1, 1 + 5 * 7, 64) and mine.config.img_size == (40, 56)
    compare(theirs, mine, images(height=40, width=56))


def test_pickle_and_wrapped_checkpoint(tmp_path: Path) -> None:
    """.pth read with weights_only=True, inside a training checkpoint's {'model': ...}, DDP `module.` keys."""
    theirs = realistic_(TimmViT(**SMALL, num_classes=0, global_pool="avg"))
    torch.save({"model": {f"module.{k}": v for k, v in theirs.state_dict().items()}, "epoch": 3}, tmp_path / "c.pth")
    mine = vitkit.load_pretrained(tmp_path / "c.pth", num_heads=4)
    assert mine.config.global_pool == "avg" and mine.config.use_fc_norm
    compare(theirs, mine, images())


def test_deepseek_vl2_vision_tower(tmp_path: Path) -> None:
    """`vision.`-prefixed SigLIP tower beside a language model; heads and size from config.json's vision_config;
    select_layer=-2 keeps the final norm (DeepSeek-VL2), HF-style hidden_states[-2] has none."""
    tower = realistic_(timm.create_model("vit_base_patch16_siglip_224", pretrained=False, num_classes=0,
                                         img_size=36, patch_size=6, embed_dim=64, depth=3, num_heads=4))
    weights = {f"vision.{k}": v for k, v in tower.state_dict().items()}
    weights.update({"language.embed.weight": torch.zeros(4, 8), "projector.layers.0.weight": torch.zeros(8, 64)})
    save_file(weights, str(tmp_path / "model.safetensors"))
    config = {"vision_config": {"model_name": "siglip_so400m_patch14_384", "image_size": 36, "patch_size": 6,
                                "width": 64, "layers": 3, "heads": 4, "global_pool": "map", "ignore_head": True,
                                "class_token": False}, "language_config": {}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_checkpoint(tmp_path, select_layer=-2)
    mine = loaded.model
    assert loaded.source_format == "deepseek-vl2" and loaded.report.dropped
    assert mine.config.ignore_head and len(mine.blocks) == 2
    full = vitkit.load_pretrained(tmp_path)

    def two_blocks(x: torch.Tensor) -> torch.Tensor:
        return tower.blocks[:2](tower._pos_embed(tower.patch_embed(x)))

    x = images(height=36, width=36)
    assert_parity(mine, lambda x: tower.norm(two_blocks(x)), x, mine, tower)
    assert_parity(lambda x: full.forward_hidden_states(x)[-2], two_blocks, x, full, tower)


@pytest.mark.parametrize("prefix", ["visual.trunk."])
def test_open_clip_timm_trunk(tmp_path: Path, prefix: str) -> None:
    trunk = realistic_(TimmViT(**SMALL, num_classes=0))
    proj = realistic_(torch.nn.Linear(64, 16, bias=False), seed=1)  # open_clip's timm head: a bias-free Linear
    weights = {f"{prefix}{k}": v for k, v in trunk.state_dict().items()}
    weights.update({"visual.head.proj.weight": proj.weight.detach(), "text.token_embedding.weight": torch.zeros(3, 16)})
    save_file(weights, str(tmp_path / "open_clip_model.safetensors"))
    loaded = load_checkpoint(tmp_path / "open_clip_model.safetensors", num_heads=4)
    assert loaded.source_format == "open_clip-timm"
    assert_parity(loaded.model, lambda x: proj(trunk(x)), images(), loaded.model, trunk, proj)
