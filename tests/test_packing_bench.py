"""`vitkit bench packing`: packed vs padded on a tiny model (the numbers themselves are never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitkit.bench.packing_bench import PackingBenchSettings, random_images, run_packing_bench
from vitkit.cli import app


def test_packing_bench_reports_both_ways_on_the_same_tokens():
    settings = PackingBenchSettings(model="vit_digits", images=12, min_side=4, max_side=16, steps=1, warmup=0,
                                    device="cpu", batch_size=4)
    report = run_packing_bench(settings)
    padded, packed = report["rows"]
    assert (padded["way"], packed["way"]) == ("padded", "packed")
    sides = [x.shape[1:] for x in random_images(settings, 1)]
    real = sum(-(-h // 2) * -(-w // 2) for h, w in sides)  # vit_digits: 2x2 patches, no prefix tokens
    assert padded["real_tokens"] == packed["real_tokens"] == real
    assert packed["tokens_processed"] < padded["tokens_processed"]
    assert packed["tokens_processed"] >= real and packed["padding_pct"] < padded["padding_pct"]
    assert padded["speedup"] == 1.0 and packed["speedup"] > 0 and packed["tensor_mem_mb"] > 0
    assert report["settings"]["max_tokens"] == 2 * 64


def test_bench_packing_command_writes_json(tmp_path: Path):
    out = tmp_path / "packing.json"
    result = CliRunner().invoke(app, ["bench", "packing", "--model", "vit_digits", "--images", "6", "--min-side",
                                      "4", "--max-side", "12", "--steps", "1", "--warmup", "0", "--mode", "train",
                                      "--device", "cpu", "--json", str(out), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    assert "packed" in result.stdout and json.loads(out.read_text())["settings"]["mode"] == "train"
    assert (tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"min_side": 50, "max_side": 40}, "min_side"),
    ({"mode": "serve"}, "mode"),
    ({"model": "resnet50"}, "unknown model 'resnet50'"),
    ({"images": 0}, "images"),
])
def test_packing_bench_settings_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PackingBenchSettings(**kwargs)
