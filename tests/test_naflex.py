"""SigLIP2 NaFlex: towers saved by transformers' `Siglip2VisionModel` (and timm's `NaFlexVit`) load, and a packed
batch of images of mixed sizes and aspect ratios gives, for every image, the tokens and pooled row that transformers
gives it in its padded batch; SigLIP2's sizing rule and processor pixels are reproduced; the commands take
`--max-patches`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel
from transformers.models.siglip2.image_processing_siglip2 import get_image_size_for_max_num_patches
from typer.testing import CliRunner

import vitkit
from interop_helpers import assert_close, realistic_
from vitkit.checkpoints import hf_siglip, load_checkpoint
from vitkit.cli import app
from vitkit.data import DataConfig, eval_transform
from vitkit.data.transforms import naflex_size

ATOL = 1e-5
PATCH = 8
# A small tower with an 8 x 8 table, so images are both up- and down-sampled onto it.
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_patches=64,
             patch_size=PATCH, hidden_act="gelu_pytorch_tanh")
GRIDS = [(3, 9), (12, 5), (8, 8), (2, 2), (16, 11), (1, 7)]
# vitkit name -> HF repository whose Siglip2VisionModel it is (shapes checked below, numbers by the tests above).
NAFLEX_PEERS = {"siglip2_base_patch16_naflex": "google/siglip2-base-patch16-naflex",
                "siglip2_so400m_patch16_naflex": "google/siglip2-so400m-patch16-naflex"}


def saved_tower(tmp_path: Path, **config: Any) -> tuple[Siglip2VisionModel, Path]:
    model = realistic_(Siglip2VisionModel(Siglip2VisionConfig(**{**SMALL, **config})))
    model.save_pretrained(tmp_path / "siglip2")
    return model, tmp_path / "siglip2"


def images(grids: list[tuple[int, int]] = GRIDS) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(3, h * PATCH, w * PATCH, generator=gen) for h, w in grids]


def hf_batch(pictures: list[torch.Tensor], max_patches: int) -> dict[str, torch.Tensor]:
    """transformers' padded NaFlex inputs for already-sized images: (row, column, channel) patches, mask, shapes."""
    values = torch.zeros(len(pictures), max_patches, 3 * PATCH * PATCH)
    mask = torch.zeros(len(pictures), max_patches, dtype=torch.long)
    shapes = []
    for i, image in enumerate(pictures):
        c, h, w = image.shape
        patches = image.reshape(c, h // PATCH, PATCH, w // PATCH, PATCH).permute(1, 3, 2, 4, 0)  # (h, w, p, p, c)
        patches = patches.reshape(-1, c * PATCH**2)
        values[i, : len(patches)], mask[i, : len(patches)] = patches, 1
        shapes.append((h // PATCH, w // PATCH))
    return {"pixel_values": values, "pixel_attention_mask": mask, "spatial_shapes": torch.tensor(shapes)}


def assert_naflex_parity(mine: vitkit.VisionTransformer, theirs: Siglip2VisionModel,
                         pictures: list[torch.Tensor]) -> None:
    with torch.no_grad():
        out = theirs(**hf_batch(pictures, max(p.shape[1] * p.shape[2] // PATCH**2 for p in pictures)))
        pooled, tokens = mine.forward_packed(mine.pack(pictures), pre_logits=True, return_tokens=True)
        for i, token in enumerate(tokens):
            assert_close(token, out.last_hidden_state[i, : len(token)], ATOL)
        assert_close(pooled, out.pooler_output, ATOL)


def test_a_siglip2_naflex_directory_loads_with_the_naflex_settings(tmp_path: Path) -> None:
    _, path = saved_tower(tmp_path)
    loaded = load_checkpoint(path)
    config = loaded.model.config
    assert loaded.source_format == "hf-siglip" and loaded.report.clean
    assert (config.patch_size, config.img_size, config.max_patches) == ((PATCH, PATCH), (64, 64), 64)
    assert (config.pos_embed_interpolation, config.pos_embed_antialias, config.dynamic_img_size) == (
        "bilinear", True, True)
    assert (config.global_pool, config.class_token, config.act_layer) == ("map", False, "gelu_tanh")


def test_packed_images_of_mixed_shapes_give_transformers_tokens_and_pooled_rows(tmp_path: Path) -> None:
    theirs, path = saved_tower(tmp_path)
    mine = vitkit.load_pretrained(path)
    assert_naflex_parity(mine, theirs, images())


def test_the_dense_forward_of_one_size_equals_packing_it(tmp_path: Path) -> None:
    _, path = saved_tower(tmp_path)
    mine = vitkit.load_pretrained(path)
    batch = torch.stack(images([(5, 12)] * 3))
    with torch.no_grad():
        dense = mine.forward_head(mine.forward_features(batch), pre_logits=True)
        packed = mine.forward_packed(mine.pack(list(batch), max_tokens=120), pre_logits=True)
    assert_close(dense, packed, ATOL)


def test_a_table_resized_without_antialias_fails_the_check(tmp_path: Path) -> None:
    theirs, path = saved_tower(tmp_path)
    mine = vitkit.load_pretrained(path, pos_embed_antialias=False)
    with pytest.raises(AssertionError):
        assert_naflex_parity(mine, theirs, images())


def test_patches_flattened_in_another_order_fail_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs, path = saved_tower(tmp_path)
    monkeypatch.setattr(hf_siglip, "naflex_to_conv",  # (channel, row, column) instead of (row, column, channel)
                        lambda weight, patch, channels: weight.reshape(weight.shape[0], channels, patch, patch))
    mine = vitkit.load_pretrained(path)
    with pytest.raises(AssertionError):
        assert_naflex_parity(mine, theirs, images())


def test_timm_naflexvit_weights_load_with_its_outputs() -> None:
    theirs = realistic_(timm.create_model("naflexvit_base_patch16_siglip", depth=2, embed_dim=64, num_heads=4))
    converted = vitkit.convert_state_dict(theirs.state_dict(), num_heads=4)
    assert converted.source_format == "timm-naflex"
    mine = vitkit.build_model(converted.config).eval()
    mine.load_state_dict(converted.state_dict)
    x = torch.randn(2, 3, 160, 96)  # a 10 x 6 grid of the 16 x 16 table
    with torch.no_grad():
        assert_close(mine.forward_features(x), theirs.forward_features(x), ATOL)
        assert_close(mine(x), theirs(x), ATOL)


@pytest.mark.parametrize("name", sorted(NAFLEX_PEERS))
def test_registered_naflex_towers_have_transformers_shapes(name: str) -> None:
    sizes = {"siglip2_base_patch16_naflex": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                 num_attention_heads=12),
             "siglip2_so400m_patch16_naflex": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                                   num_attention_heads=16)}[name]
    with torch.device("meta"):
        theirs = Siglip2VisionModel(Siglip2VisionConfig(**sizes, num_patches=256, patch_size=16))
    config = vitkit.models.get_config(name)
    assert vitkit.models.model_info(name).params == sum(p.numel() for p in theirs.parameters())
    assert (config.max_patches, config.mean, config.interpolation, config.act_layer) == (
        256, (0.5, 0.5, 0.5), "bilinear", "gelu_tanh")


# -- SigLIP2's sizing rule and processor ------------------------------------------------------------------------------


@pytest.mark.parametrize(("patch", "budget"), [(16, 256), (16, 1024), (14, 729), (8, 64)])
def test_naflex_size_is_transformers_target_size_for_every_aspect_ratio(patch: int, budget: int) -> None:
    sides = [1, 7, 16, 33, 100, 224, 256, 427, 640, 1000, 4000]
    for height in sides:
        for width in sides:
            want = get_image_size_for_max_num_patches(height, width, patch, budget)
            assert naflex_size(height, width, patch, budget) == want, (height, width)
            assert (want[0] // patch) * (want[1] // patch) <= budget


@pytest.mark.parametrize("budget", [256, 1024])
def test_the_transform_gives_the_processors_pixels_on_real_photos(budget: int) -> None:
    processor = Siglip2ImageProcessor(max_num_patches=budget, patch_size=16)
    transform = eval_transform(DataConfig.of(vitkit.models.get_config("siglip2_base_patch16_naflex"), budget),
                               keep_aspect=True)
    for photo in load_sample_images().images:  # scikit-learn's bundled photographs (427 x 640)
        out = processor(images=[Image.fromarray(photo)], return_tensors="pt")
        mine = transform(Image.fromarray(photo))  # as `vitkit eval` / `embed` decode: with PIL
        c, h, w = mine.shape
        assert [h // 16, w // 16] == out["spatial_shapes"][0].tolist()
        patches = mine.reshape(c, h // 16, 16, w // 16, 16).permute(1, 3, 2, 4, 0).reshape(-1, c * 256)
        assert_close(patches, out["pixel_values"][0, : len(patches)], 1e-6)


# -- the commands ----------------------------------------------------------------------------------------------------


def photo_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name, shapes in (("a", [(40, 90), (100, 30), (64, 64)]), ("b", [(20, 150), (90, 70), (33, 47)])):
        (root / name).mkdir(parents=True)
        for i, (h, w) in enumerate(shapes):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_embed_with_a_patch_budget_packs_every_image_at_its_naflex_size(tmp_path: Path) -> None:
    _, path = saved_tower(tmp_path)
    folder = photo_folder(tmp_path / "photos")
    result = invoke("embed", "--checkpoint", path, "--data", folder, "--max-patches", 36, "--out", tmp_path / "emb")
    assert result.exit_code == 0, result.output
    rows, index = vitkit.load_embeddings(tmp_path / "emb")
    config = json.loads((tmp_path / "emb" / "embed_config.json").read_text())
    assert config["transform"]["max_patches"] == 36 and config["packing"] is not None
    model = vitkit.load_pretrained(path)
    transform = eval_transform(DataConfig.of(model.config, 36), keep_aspect=True)
    for row, name in zip(rows, index.paths, strict=True):
        image = transform(Image.open(name).convert("RGB"))
        assert (image.shape[1] // PATCH) * (image.shape[2] // PATCH) <= 36
        with torch.no_grad():
            alone = model.forward_head(model.forward_features(image[None]), pre_logits=True)[0]
        assert_close(row, alone, ATOL)


def test_eval_predict_and_train_take_a_patch_budget(tmp_path: Path) -> None:
    folder = photo_folder(tmp_path / "photos")
    tiny = ["--set", "depth=1", "--set", "embed_dim=32", "--set", "num_heads=2", "--set", "patch_size=8",
            "--set", "img_size=64"]
    result = invoke("train", "--model", "siglip2_base_patch16_naflex", *tiny, "--data", folder, "--val-split", "0.5",
                    "--epochs", "1", "--batch-size", "2", "--packing", "--max-patches", "20", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["max_patches"] == 20
    result = invoke("eval", "--checkpoint", tmp_path / "run", "--data", folder, "--val-split", "0.5",
                    "--max-patches", "20", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["count"] == 3
    files = sorted((folder / "a").glob("*.png"))
    result = invoke("predict", "--checkpoint", tmp_path / "run", *files, "--max-patches", "20", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == len(files)
