"""`vitkit bench packing`: packed, padded and one at a time on a tiny model (numbers never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitkit.bench.packing_bench import PackingBenchSettings, random_images, run_packing_bench
from vitkit.cli import app


def test_packing_bench_reports_three_ways_on_the_same_tokens():
    settings = PackingBenchSettings(model="vit_digits", images=12, min_side=4, max_side=16, side_step=2,
                                    max_tokens=(8, 64, 128), steps=1, warmup=0, rounds=2, device="cpu", batch_size=4)
    report = run_packing_bench(settings)
    rows = {(row["way"], row["max_tokens"]): row for row in report["rows"]}
    assert list(rows) == [("one at a time", None), ("padded", None), ("packed", 8), ("packed", 64), ("packed", 128)]
    sides = [x.shape[1:] for x in random_images(settings, 1)]
    assert all(h % 2 == 0 and w % 2 == 0 and min(h, w) >= 4 and max(h, w) <= 16 for h, w in sides)
    real = sum((h // 2) * (w // 2) for h, w in sides)  # vit_digits: 2x2 patches, no prefix tokens
    largest = max((h // 2) * (w // 2) for h, w in sides)
    one, padded, packed = rows["one at a time", None], rows["padded", None], rows["packed", 64]
    assert rows["packed", 8] == {"way": "packed", "max_tokens": 8, "real_tokens": real, "status": "skipped",
                                 "reason": f"the largest image has {largest} tokens"}
    assert one["real_tokens"] == padded["real_tokens"] == packed["real_tokens"] == real
    assert one["tokens_processed"] == real and one["calls"] == 12 and one["padding_pct"] == 0.0
    assert real <= packed["tokens_processed"] < padded["tokens_processed"]
    assert packed["padding_pct"] < padded["padding_pct"]
    assert one["vs_one"] == padded["vs_padded"] == 1.0
    assert packed["vs_one"] > 0 and packed["tensor_mem_mb"] > 0 and packed["mem_vs_padded"] > 0
    assert report["settings"]["max_tokens"] == (8, 64, 128) and report["settings"]["rounds"] == 2


def test_bench_packing_command_writes_json(tmp_path: Path):
    out = tmp_path / "packing.json"
    result = CliRunner().invoke(app, ["bench", "packing", "--model", "vit_digits", "--images", "6", "--min-side",
                                      "4", "--max-side", "12", "--side-step", "4", "--max-tokens", "40,64",
                                      "--steps", "1", "--warmup", "0", "--mode", "train", "--device", "cpu",
                                      "--json", str(out), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    assert "running round 1/1: packed 40" in result.output and "tokens/s counts real image tokens" in result.stdout
    report = json.loads(out.read_text())
    assert report["settings"]["mode"] == "train" and [row["max_tokens"] for row in report["rows"]] == [None, None,
                                                                                                        40, 64]
    assert (tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"min_side": 50, "max_side": 40}, "min_side"),
    ({"mode": "serve"}, "mode"),
    ({"model": "resnet50"}, "unknown model 'resnet50'"),
    ({"images": 0}, "images"),
    ({"side_step": 0}, "side_step"),
    ({"max_tokens": (512, 0)}, "max_tokens"),
    ({"rounds": 0}, "rounds"),
])
def test_packing_bench_settings_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PackingBenchSettings(**kwargs)
