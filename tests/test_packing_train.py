"""Packed (NaViT) training and evaluation end to end: mixed-size image folders and the bundled digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vitkit.cli import app
from vitkit.data.packed import PackCollate
from vitkit.data.transforms import FitWithin
from vitkit.train import TrainOptions, train
from vitkit.train.model_setup import run_config


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def mixed_folder(root: Path) -> Path:
    """Two classes of PNGs of many sizes and aspect ratios (class 1 is brighter)."""
    rng = np.random.default_rng(0)
    sizes = [(20, 40), (40, 16), (64, 30), (12, 12), (33, 47), (48, 48)]
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i, (h, w) in enumerate(sizes * 2):
            image = rng.integers(0, 100, (h, w, 3), dtype=np.uint8) + 120 * c
            Image.fromarray(image.astype(np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


def test_fit_within_keeps_aspect_and_caps_the_longest_side():
    fit = FitWithin(32)
    assert fit(torch.rand(3, 64, 30)).shape == (3, 32, 15)
    assert fit(torch.rand(3, 20, 80)).shape == (3, 8, 32)
    assert fit(torch.rand(3, 12, 20)).shape == (3, 12, 20)  # never enlarged


def test_pack_collate_makes_a_packed_batch_and_labels():
    collate = PackCollate(20, dict(patch_size=(4, 4), num_prefix_tokens=1))
    batch, labels = collate([(torch.rand(3, 8, 12), 3), (torch.rand(3, 16, 16), 1)])
    assert labels.tolist() == [3, 1] and batch.num_images == 2 and batch.num_prefix_tokens == 1
    assert batch.lengths.tolist() == [7, 17] and batch.num_sequences == 2


@pytest.mark.slow
def test_packed_train_and_eval_on_mixed_sizes(tmp_path: Path) -> None:
    data = mixed_folder(tmp_path / "mixed")
    run = tmp_path / "run"
    result = invoke("train", "--model", "vit_tiny_patch16_224", "--img-size", "32", "--data", str(data),
                    "--val-split", "0.25", "--epochs", "2", "--batch-size", "6", "--packing", "--max-tokens", "12",
                    "--token-drop", "0.25", "--out", str(run))
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["dynamic_img_size"] and config["dynamic_img_pad"] and config["token_drop"] == 0.25
    assert json.loads((run / "train_options.json").read_text())["packing"] is True
    result = invoke("eval", "--checkpoint", str(run), "--data", str(data), "--val-split", "0.25", "--packing",
                    "--max-tokens", "10", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["count"] == 6 and 0.0 <= report["top1"] <= report["top5"] <= 1.0


@pytest.mark.slow
def test_packed_digits_train_and_eval_match_unpacked_eval(tmp_path: Path) -> None:
    """All digits are 8x8: packing must still work, and packed evaluation equals the padded one."""
    run = tmp_path / "run"
    summary = train(TrainOptions(out=str(run), epochs=1, batch_size=256, packing=True))
    assert summary.steps == 5 and summary.last is not None
    packed = invoke("eval", "--checkpoint", str(run), "--packing", "--json")
    plain = invoke("eval", "--checkpoint", str(run), "--json")
    assert packed.exit_code == 0 and plain.exit_code == 0, packed.output + plain.output
    a, b = json.loads(packed.stdout), json.loads(plain.stdout)
    assert a["count"] == b["count"] == 360 and a["top1"] == b["top1"]
    assert abs(a["loss"] - b["loss"]) < 1e-5


@pytest.mark.parametrize(("args", "message"), [
    (["--max-tokens", "64"], "--max-tokens and --token-drop need --packing"),
    (["--packing", "--token-drop", "1.0"], "--token-drop must be in [0, 1)"),
])
def test_bad_packing_options_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke("train", "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 1 and message in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_simple_vit_trains_packed_as_any_vision_transformer() -> None:
    config = run_config(TrainOptions(model="simple_vit_small_patch16_224", packing=True, token_drop=0.25))
    assert (config.dynamic_img_size, config.dynamic_img_pad, config.token_drop) == (True, True, 0.25)
    assert config.patch_embed == "norm_linear_norm" and config.pos_embed == "sincos"
