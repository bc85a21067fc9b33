"""OpenAI CLIP / OpenCLIP image towers into vitkit: open_clip's ViT-B-32 built small through create_model's
config overrides, saved as its state_dict; its open_clip_config.json (hub layout) settles heads and activation."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch

import vitkit
from interop_helpers import assert_parity, images, realistic_
from vitkit.checkpoints import load_checkpoint

VISION = dict(image_size=64, layers=2, width=64, patch_size=32, head_width=16)
TEXT = dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1)


def small_b32(quick_gelu: bool = False) -> torch.nn.Module:
    return realistic_(open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=quick_gelu, embed_dim=24,
                                             vision_cfg=VISION, text_cfg=TEXT))


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_open_clip_vit_b_32_visual(tmp_path: Path, quick_gelu: bool) -> None:
    theirs = small_b32(quick_gelu)
    torch.save(theirs.state_dict(), tmp_path / "open_clip.pt")
    loaded = load_checkpoint(tmp_path / "open_clip.pt", num_heads=4, act_layer="quick_gelu" if quick_gelu else "gelu")
    mine = loaded.model
    assert loaded.source_format == "open_clip" and loaded.report.clean
    assert any("text tower" in d for d in loaded.report.dropped)
    assert (mine.config.norm_pre, mine.config.num_classes, mine.config.img_size) == (True, 24, (64, 64))
    x = images(height=64, width=64)
    assert_parity(mine, theirs.encode_image, x, mine, theirs)
    theirs.visual.output_tokens = True
    assert_parity(mine, lambda x: theirs.visual(x)[0], x, mine, theirs)
    assert_parity(lambda x: mine.forward_features(x)[:, 1:], lambda x: theirs.visual(x)[1], x, mine, theirs)


def test_open_clip_hub_directory_needs_no_arguments(tmp_path: Path) -> None:
    """open_clip_config.json (as on the hub) gives the head width and QuickGELU; the weights are a .bin pickle."""
    theirs = small_b32(quick_gelu=True)
    torch.save(theirs.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    model_cfg = {"embed_dim": 24, "quick_gelu": True, "vision_cfg": VISION, "text_cfg": TEXT}
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {
        "mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}}))
    mine = vitkit.load_pretrained(tmp_path)
    assert mine.config.act_layer == "quick_gelu" and mine.config.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    assert_parity(mine, theirs.encode_image, images(height=64, width=64), mine, theirs)


def test_open_clip_without_config_asks_for_the_activation(tmp_path: Path) -> None:
    torch.save(small_b32().visual.state_dict(), tmp_path / "visual.pt")  # a bare visual tower
    with pytest.raises(ValueError, match=r"visual\.pt.*act_layer.*quick_gelu"):
        vitkit.load_pretrained(tmp_path / "visual.pt", num_heads=4)
