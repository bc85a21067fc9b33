"""`vitkit bench tower`: a Qwen-VL tower packed in vitkit against transformers' on the same images and weights, on
narrow towers (numbers never asserted, parity always)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitkit.bench.tower_bench import TowerBenchSettings, run_tower_bench, tower_config, tower_images
from vitkit.cli import app

TINY = ["--depth", "2", "--images", "3", "--steps", "1", "--warmup", "0", "--max-side", "112", "--width", "64",
        "--device", "cpu"]


def invoke(*args: str):
    return CliRunner().invoke(app, ["bench", "tower", *args])


def test_bench_tower_command_writes_both_ways_and_parity(tmp_path: Path):
    result = invoke(*TINY, "--rounds", "2", "--json", str(tmp_path / "t.json"), "--plot", str(tmp_path / "t.png"))
    assert result.exit_code == 0, result.output
    assert "running round 2/2: transformers" in result.output and "max |difference|" in result.stdout
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["benchmark"] == "tower" and report["settings"]["model"] == "qwen2_5_vl_vision_7b"
    assert [row["way"] for row in report["rows"]] == ["vitkit (packed)", "transformers"]
    assert report["max_abs_diff"] < 1e-3
    assert report["tower"]["full_attention_blocks"] == [1] and report["tower"]["window_size"] == 8
    assert report["patch_tokens"] == sum(h * w // 14**2 for h, w in report["sizes"]) == 4 * report["merged_tokens"]
    for row in report["rows"]:
        assert row["img_per_s"] > 0 and row["tokens_per_s"] > 0 and row["ratio"] > 0
    assert report["rows"][1]["ratio"] == 1.0 and "attn_implementation=sdpa" in report["rows"][1]["notes"]
    assert "1 sequence(s) of 192 slots for 192 patches" in report["rows"][0]["notes"]  # one sequence, as HF's
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_qwen3_tower_keeps_deepstack_below_depth_across_sequences():
    settings = TowerBenchSettings(model="qwen3_vl_vision_8b", depth=9, images=3, min_side=64, max_side=200, width=64,
                                  max_tokens=400, steps=1, warmup=0, device="cpu")
    report = run_tower_bench(settings)
    assert report["tower"]["deepstack"] == [8] and report["tower"]["window_size"] is None
    assert report["rows"][0]["notes"].startswith("attention auto, 3 sequence(s) of")
    assert report["max_abs_diff"] < 1e-3
    # smart_resize: sides multiples of 32, at least min_pixels (65536) for these small raw sides
    assert all(h % 32 == 0 and w % 32 == 0 and h * w >= 65536 for h, w in report["sizes"])


def test_tower_config_keeps_a_windowed_and_a_full_block():
    assert tower_config("qwen2_5_vl_vision_7b", 4).full_attention_blocks == (3,)
    assert tower_config("qwen2_5_vl_vision_7b", 16).full_attention_blocks == (7, 15)
    narrow = tower_config("qwen2_5_vl_vision_3b", 2, width=128)
    assert (narrow.embed_dim, narrow.depth, narrow.mlp_width % 2) == (128, 2, 0)
    sides = [tuple(x.shape[1:]) for x in tower_images(TowerBenchSettings(images=5), tower_config(
        "qwen2_5_vl_vision_7b", 4))]
    assert all(h % 28 == 0 and w % 28 == 0 and min(h, w) >= 112 and max(h, w) <= 448 for h, w in sides)


@pytest.mark.parametrize(("args", "message"), [
    (["--depth", "1"], "depth must be >= 2 for qwen2_5_vl_vision_7b"),
    (["--depth", "40"], "depth must be between 1 and 32"),
    (["--model", "vit_small_patch16_224"], "model must be a Qwen-VL vision tower"),
    (["--model", "qwen2_5_vl_vision_1b"], "qwen2_5_vl_vision_1b"),
    (["--min-side", "300", "--max-side", "200"], "min_side (300) must be <= max_side (200)"),
    (["--images", "0"], "images must be an integer >= 1"),
    (["--width", "100"], "width must be a multiple of 64"),
    (["--attention", "fastest"], "unknown attention backend 'fastest'"),
    (["--max-tokens", "0"], "max_tokens must be an integer >= 1"),
    ([*TINY, "--max-tokens", "10"], "does not fit max_tokens=10"),
])
def test_bad_options_give_one_error_line(args: list[str], message: str):
    result = invoke(*args)
    assert result.exit_code != 0
    errors = [line for line in result.stderr.splitlines() if not line.startswith("running ")]  # progress lines
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], result.stderr


def test_missing_transformers_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    real_import = builtins.__import__

    def no_transformers(name: str, *args, **kwargs):
        if name.startswith("transformers"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    result = invoke(*TINY)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "pip install transformers" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
