"""lucidrains' vit-pytorch into vitkit: SimpleViT (-> the VisionTransformer configuration of vitkit.SimpleViT) and
ViT with cls or mean pooling, heads x dim_head != dim, and the heads == 1, dim_head == dim case that has no output
projection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import vit_pytorch

import vitkit
from interop_helpers import assert_parity, images, realistic_
from vitkit.checkpoints import load_checkpoint


def test_vit_pytorch_simple_vit(tmp_path: Path) -> None:
    config = dict(image_size=(32, 48), patch_size=8, num_classes=10, dim=64, depth=2, heads=4, mlp_dim=128,
                  dim_head=16)
    theirs = realistic_(vit_pytorch.SimpleViT(**config))
    torch.save(theirs.state_dict(), tmp_path / "simple.pt")
    loaded = load_checkpoint(tmp_path / "simple.pt", num_heads=4, img_size=(32, 48))
    mine = loaded.model
    assert loaded.source_format == "vit-pytorch-simple" and loaded.report.clean
    c = mine.config
    assert (c.num_heads, c.embed_dim, c.mlp_width, c.patch_size, c.img_size, c.in_chans) == (
        4, 64, 128, (8, 8), (32, 48), 3)  # heads 64 / 4 = 16 wide
    assert (c.patch_embed, c.pos_embed, c.class_token, c.global_pool, c.fc_norm, c.qkv_bias, c.proj_bias) == (
        "norm_linear_norm", "sincos", False, "avg", False, False, False)  # vitkit.SimpleViT(head_norm='tokens')
    assert_parity(mine, theirs, images(height=32, width=48), mine, theirs)


def test_vit_pytorch_simple_vit_grayscale_patch_size_follows_in_chans(tmp_path: Path) -> None:
    config = dict(image_size=32, patch_size=8, num_classes=3, dim=32, depth=1, heads=2, mlp_dim=64, channels=1)
    theirs = realistic_(vit_pytorch.SimpleViT(**config))
    torch.save(theirs.state_dict(), tmp_path / "simple.pt")
    mine = vitkit.load_pretrained(tmp_path / "simple.pt", num_heads=2, img_size=32, in_chans=1)
    assert (mine.config.in_chans, mine.config.patch_size) == (1, (8, 8))
    assert_parity(mine, theirs, images(channels=1), mine, theirs)


def test_vit_pytorch_simple_vit_needs_the_image_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    theirs = vit_pytorch.SimpleViT(image_size=32, patch_size=8, num_classes=3, dim=32, depth=1, heads=2, mlp_dim=64)
    torch.save(theirs.state_dict(), tmp_path / "simple.pt")
    with pytest.raises(ValueError, match=r"simple\.pt.*img_size"):
        vitkit.load_pretrained(tmp_path / "simple.pt", num_heads=2)
    with pytest.raises(ValueError, match=r"simple\.pt.*num_heads"):
        vitkit.load_pretrained(tmp_path / "simple.pt", img_size=32)


@pytest.mark.parametrize(("overrides", "pool"), [
    ({}, "token"),
    ({"pool": "mean"}, "avg"),
    ({"dim_head": 32, "heads": 3}, "token"),  # inner width 96 != dim 64
    ({"heads": 1, "dim_head": 64}, "token"),  # no to_out in vit-pytorch: an identity projection
])
def test_vit_pytorch_vit(tmp_path: Path, overrides: dict[str, Any], pool: str) -> None:
    config = dict(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4, mlp_dim=96, dim_head=16)
    config.update(overrides)
    theirs = realistic_(vit_pytorch.ViT(**config))
    torch.save(theirs.state_dict(), tmp_path / "vit.pth")
    loaded = load_checkpoint(tmp_path / "vit.pth", num_heads=config["heads"])
    mine = loaded.model
    assert loaded.source_format == "vit-pytorch" and loaded.report.clean
    assert mine.config.global_pool == pool and mine.config.patch_embed == "norm_linear_norm"
    assert_parity(mine, theirs, images(), mine, theirs)
