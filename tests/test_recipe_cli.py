"""The recipe from the outside: timm's evaluation transform as the peer, unreadable files, the train command's flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vitkit import create_model
from vitkit.cli import app
from vitkit.data import DataConfig, eval_transform, write_digits_folder
from vitkit.data.datasets import open_image

timm = pytest.importorskip("timm")
from timm.data import create_transform, resolve_data_config  # noqa: E402

from test_recipe import TINY, photo_folder  # noqa: E402


@pytest.mark.parametrize("size", [(300, 200), (97, 131), (224, 224), (500, 333)])
@pytest.mark.parametrize(("crop_pct", "interpolation", "img_size"), [
    (None, None, None), (0.875, "bilinear", None), (1.0, "bicubic", (160, 224)), (0.95, "bicubic", (256, 192)),
])
def test_eval_transform_equals_timms(tmp_path: Path, size: tuple[int, int], crop_pct: float | None,
                                     interpolation: str | None, img_size: tuple[int, int] | None) -> None:
    rng = np.random.default_rng(sum(size))
    path = tmp_path / "image.jpg"
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, quality=90)
    changes = {k: v for k, v in (("crop_pct", crop_pct), ("interpolation", interpolation), ("img_size", img_size))
               if v is not None}
    config = create_model("vit_small_patch16_224", depth=1, **changes).config
    peer_model = timm.create_model("vit_small_patch16_224", depth=1, pretrained=False)
    args = {"crop_pct": crop_pct, "interpolation": interpolation,
            "input_size": (3, *img_size) if img_size else None}
    peer = create_transform(**resolve_data_config({k: v for k, v in args.items() if v is not None},
                                                  model=peer_model), is_training=False)
    with Image.open(path) as image:
        expected = peer(image.convert("RGB"))
    ours = eval_transform(DataConfig.of(config))(open_image(path, 3))
    assert ours.shape == expected.shape == (3, *config.img_size)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_registered_names_carry_timms_crop() -> None:
    for name in ("vit_small_patch16_224", "siglip_base_patch16_224"):
        config = create_model(name, depth=1).config
        peer = timm.create_model({"siglip_base_patch16_224": "vit_base_patch16_siglip_224"}.get(name, name),
                                 depth=1, pretrained=False).pretrained_cfg
        assert (config.crop_pct, config.interpolation) == (peer["crop_pct"], peer["interpolation"])


def test_digits_folder_keeps_the_fixed_split(tmp_path: Path) -> None:
    root = write_digits_folder(tmp_path / "digits", size=32)
    train_files = sorted((root / "train").rglob("*.jpg"))
    val_files = sorted((root / "val").rglob("*.jpg"))
    assert len(train_files) == 1437 and len(val_files) == 360
    with Image.open(val_files[0]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"


runner = CliRunner()


@pytest.mark.slow
def test_unreadable_image_stops_before_training_unless_skipped(tmp_path: Path) -> None:
    data = photo_folder(tmp_path / "data", classes=2, per_class=4)
    bad = data / "train" / "c1" / "broken.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    base = ["train", "--model", "vit_tiny_patch16_224", *[a for kv in TINY for a in ("--set", kv)], "--data",
            str(data), "--epochs", "1", "--batch-size", "4", "--workers", "0"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "a")])
    assert result.exit_code != 0 and "broken.jpg" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "a" / "train_state.pt").exists()
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--skip-unreadable", "--aa", "trivial",
                                 "--mixup", "0.5", "--model-ema", "--layer-decay", "0.7", "--clip-grad", "1"])
    assert result.exit_code == 0, result.output
    assert "optimizer parameter groups" in result.output and f"skipped unreadable image: {bad}" in result.output
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_unreadable"] for r in records if r["kind"] == "epoch"] == [1]
    options = json.loads((tmp_path / "b" / "train_options.json").read_text())
    assert options["aa"] == "trivial" and options["layer_decay"] == 0.7 and options["overrides"] == list(TINY)
