"""One position-table resampler (`VisionTransformer.resample_pos_embed`) for loading a checkpoint at another size,
training from one, and running other grids (dynamic sizes, packed batches): non-square grids, prefix rows, and
both flavours (timm's antialiased bicubic, HF's `interpolate_pos_encoding` without antialias)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import vitkit
from interop_helpers import randomize_
from vitkit.train import TrainOptions
from vitkit.train.model_setup import build_for_run, run_config

# A learned table of a 4 x 6 grid (16 x 24 px, 4 px patches).
NON_SQUARE = dict(img_size=(16, 24), patch_size=4, embed_dim=32, depth=1, num_heads=2, num_classes=3)
PREFIX_CASES = {"class-token": {}, "no-embed-class": {"no_embed_class": True, "reg_tokens": 2},
                "no-prefix": {"class_token": False, "global_pool": "avg"}}


def saved(directory: Path, antialias: bool, prefix: dict) -> vitkit.VisionTransformer:
    torch.manual_seed(0)
    model = randomize_(vitkit.VisionTransformer(**NON_SQUARE, **prefix, pos_embed_antialias=antialias,
                                               dynamic_img_size=True))
    vitkit.save_pretrained(model, directory)
    return model


def expected(model: vitkit.VisionTransformer, grid: tuple[int, int], antialias: bool) -> torch.Tensor:
    """timm's resampling of the model's table from its 4 x 6 grid (HF's flavour: the same without antialias)."""
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    return timm.layers.resample_abs_pos_embed(model.pos_embed.detach(), new_size=list(grid), old_size=[4, 6],
                                              num_prefix_tokens=prefix, antialias=antialias)


@pytest.mark.parametrize("prefix", list(PREFIX_CASES.values()), ids=list(PREFIX_CASES))
@pytest.mark.parametrize("antialias", [True, False], ids=["timm", "hf"])
def test_load_train_and_other_grids_resample_a_non_square_table_alike(tmp_path: Path, antialias: bool,
                                                                      prefix: dict) -> None:
    model = saved(tmp_path / "model", antialias, prefix)
    want = expected(model, (8, 8), antialias)
    loaded = vitkit.load_pretrained(tmp_path / "model", img_size=32)
    into = vitkit.load_pretrained(tmp_path / "model", model=vitkit.VisionTransformer(model.config.replace(
        img_size=32)))  # the directory states its 4 x 6 grid
    options = TrainOptions(pretrained=str(tmp_path / "model"), img_size=32)
    trained = build_for_run(options, run_config(options), num_classes=5)  # a new head, the backbone loaded
    with torch.no_grad():
        for table in (loaded.pos_embed, into.pos_embed, trained.pos_embed, model.pos_embed_for(8, 8)):
            torch.testing.assert_close(table, want, rtol=0, atol=1e-6)
        torch.testing.assert_close(trained.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_packed_images_take_the_resampled_table_of_their_grid(tmp_path: Path) -> None:
    model = saved(tmp_path / "model", True, {}).eval()
    pictures = [torch.randn(3, 32, 32), torch.randn(3, 12, 40)]  # 8 x 8 and 3 x 10 grids
    with torch.no_grad():
        packed = model(model.pack(pictures, max_tokens=128))
        for i, picture in enumerate(pictures):
            torch.testing.assert_close(packed[i], model(picture[None])[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(model.pos_embed_for(3, 10), expected(model, (3, 10), True), rtol=0, atol=1e-6)


def test_a_table_that_is_not_of_the_grid_is_a_value_error() -> None:
    model = vitkit.VisionTransformer(**NON_SQUARE)
    with pytest.raises(ValueError, match=r"not 1 prefix rows \+ a 4x4 grid"):
        model.resample_pos_embed(model.pos_embed.detach(), (4, 4))
    with pytest.raises(ValueError, match="not 1 prefix rows"):  # 24 cells guessed square
        model.resample_pos_embed(model.pos_embed.detach())
