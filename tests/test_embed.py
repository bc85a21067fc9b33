"""`vitkit.embed` and `vitkit embed`: rows equal the model's own features for every pool and layer, packed rows
equal unpacked ones, shards resume bit-identically and are the same from two processes, bad input is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

import vitkit
from interop_helpers import realistic_
from vitkit.cli import app
from vitkit.embeddings import FeatureSpec, Scores, knn, load_embeddings, probe
from vitkit.embeddings import run as embed_run
from vitkit.layers import pool_tokens

ENV = {"COLUMNS": "250", "TTY_COMPATIBLE": "0", "FORCE_COLOR": None, "NO_COLOR": "1"}
TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=4, num_classes=5, dynamic_img_size=True)
# a class-token model, an avg-pool model with fc_norm, a MAP-pool model without class token (SigLIP's shape)
MODELS = {
    "token": dict(global_pool="token"),
    "avg_fc_norm": dict(global_pool="avg", fc_norm=True, reg_tokens=2),
    "map": dict(global_pool="map", class_token=False),
}


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def tower(kind: str, seed: int = 0) -> vitkit.VisionTransformer:
    return realistic_(vitkit.VisionTransformer(**{**TINY, **MODELS[kind]}), seed=seed)


def pools_of(kind: str) -> list[str]:
    return [p for p in ("token", "avg", "map", "none") if not (p == "token" and kind == "map")
            and not (p == "map" and kind != "map")]


def reference(model: vitkit.VisionTransformer, x: torch.Tensor, pool: str, layer: int, norm: bool) -> torch.Tensor:
    """The features by another route: HF-style hidden states, then norm, pool and fc_norm by hand."""
    tokens = model.forward_hidden_states(x)[layer % len(model.blocks) + 1]  # [0] is the embedding output
    if norm:
        tokens = model.norm(tokens)
    if pool == "none":
        return tokens
    if pool == "map":
        rows = model.attn_pool(tokens[:, model.num_prefix_tokens:])
    else:
        rows = pool_tokens(tokens, pool, model.num_prefix_tokens)
    return model.fc_norm(rows) if norm else rows


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_default_rows_are_the_models_pooled_features(kind: str) -> None:
    model = tower(kind)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        want = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(vitkit.embed(model, x, batch_size=2), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("layer", [-1, -2, 0])
@pytest.mark.parametrize("norm", [True, False])
def test_rows_equal_the_features_for_each_pool_and_layer(kind: str, layer: int, norm: bool) -> None:
    model = tower(kind, seed=1)
    x = torch.randn(4, 3, 16, 16)
    for pool in pools_of(kind):
        got = vitkit.embed(model, x, pool=pool, layer=layer, norm=norm, batch_size=3)
        with torch.no_grad():
            want = reference(model, x, pool, layer, norm)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"pool {pool}")
        unit = vitkit.embed(model, x, pool=pool, layer=layer, norm=norm, l2=True)
        torch.testing.assert_close(unit, F.normalize(want, dim=-1), atol=1e-5, rtol=0)


def test_layers_give_different_rows() -> None:
    """A check that cannot pass by reading the same block twice."""
    model, x = tower("token"), torch.randn(2, 3, 16, 16)
    assert not torch.allclose(vitkit.embed(model, x, layer=-1), vitkit.embed(model, x, layer=-2), atol=1e-3)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_packed_rows_equal_unpacked_rows_for_mixed_sizes(kind: str) -> None:
    model = tower(kind, seed=2)
    gen = torch.Generator().manual_seed(0)
    images = [torch.randn(3, h, w, generator=gen) for h, w in [(16, 16), (8, 20), (24, 12), (16, 16), (4, 28)]]
    for pool in [p for p in pools_of(kind) if p != "none"]:
        for layer in (-1, -2):
            packed = vitkit.embed(model, images, pool=pool, layer=layer, packing=True, max_tokens=40, batch_size=4)
            plain = vitkit.embed(model, images, pool=pool, layer=layer, batch_size=4)
            assert packed.shape == (len(images), 32)
            torch.testing.assert_close(packed, plain, atol=1e-5, rtol=0, msg=f"pool {pool}, layer {layer}")
    tokens = vitkit.embed(model, images, pool="none", packing=True, max_tokens=40)
    for image, got in zip(images, tokens, strict=True):
        with torch.no_grad():
            want = model.norm(model.forward_blocks(model.embed(image[None])))[0]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_spec_errors_name_the_choice() -> None:
    model = tower("map")
    with pytest.raises(ValueError, match="unknown pool 'cls'"):
        FeatureSpec.of(model, pool="cls")
    with pytest.raises(ValueError, match="needs a class token"):
        FeatureSpec.of(model, pool="token")
    with pytest.raises(ValueError, match=r"--layer 3 is out of range for a model of 3 blocks; use -3\.\.\.2"):
        FeatureSpec.of(model, layer=3)
    with pytest.raises(ValueError, match="--layer -4"):
        FeatureSpec.of(model, layer=-4)
    with pytest.raises(ValueError, match="needs an attention-pool"):
        FeatureSpec.of(tower("token"), pool="map")


# ---------------------------------------------------------------- files, shards, resume


def image_folder(root: Path, per_class: int = 7, classes: tuple[str, ...] = ("cat", "dog")) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(12, 40, size=2)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name / f"{i:02d}.png")
    return root


def saved_model(path: Path, kind: str = "token", seed: int = 0) -> Path:
    vitkit.save_pretrained(tower(kind, seed), path)
    return path


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.safetensors"))}


def test_shards_index_and_config_match_the_in_memory_rows(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "images")
    model = tower("token")
    out = vitkit.embed(model, data, out=tmp_path / "emb", shard_rows=4, batch_size=3, source="tiny")
    assert sorted(p.name for p in out.iterdir()) == [
        "embed_config.json", "index.csv", *(f"shard-{k:05d}.safetensors" for k in range(4))]
    matrix, index = load_embeddings(out)
    torch.testing.assert_close(matrix, vitkit.embed(model, data, batch_size=5), atol=1e-6, rtol=0)
    files = sorted(data.rglob("*.png"))
    assert index.paths == [str(p) for p in files]
    assert index.labels == [p.parent.name for p in files] and index.classes == ["cat", "dog"]
    config = json.loads((out / "embed_config.json").read_text())
    assert config["features"] == {"pool": "token", "layer": -1, "norm": True, "l2": False}
    assert config["transform"]["img_size"] == [16, 16] and config["transform"]["crop_pct"] == model.config.crop_pct
    assert config["rows"] == 14 and config["model"]["source"] == "tiny"
    assert load_file(out / "shard-00003.safetensors")["embeddings"].shape == (2, 32)


def test_fp16_rows_are_stored_half(tmp_path: Path) -> None:
    x = torch.randn(3, 3, 16, 16)
    model = tower("avg_fc_norm")
    out = vitkit.embed(model, x, out=tmp_path / "emb", dtype="fp16")
    matrix, index = load_embeddings(out)
    assert matrix.dtype == torch.float16 and index.paths == ["0", "1", "2"] and index.labels == ["", "", ""]
    torch.testing.assert_close(matrix.float(), vitkit.embed(model, x), atol=2e-3, rtol=1e-3)
    shard = out / "shard-00000.safetensors"
    before = shard.read_bytes()
    assert matrix.untyped_storage().nbytes() == len(before)  # a view of the mapped file, not a copy
    matrix.zero_()  # a private map: the file keeps its rows
    assert shard.read_bytes() == before


def test_a_run_killed_mid_way_resumes_to_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = image_folder(tmp_path / "images", per_class=9)  # 18 rows: shards of 4 -> 5 shards
    model = tower("token")
    straight = vitkit.embed(model, data, out=tmp_path / "straight", shard_rows=4, batch_size=3)

    calls = {"forward": 0}
    real_features = embed_run.features

    def dies_on_the_fifth_batch(*args, **kwargs):
        calls["forward"] += 1
        if calls["forward"] == 5:  # 4-row shards run as batches of 3 + 1: batch 5 is shard 2's first
            raise KeyboardInterrupt("killed")
        return real_features(*args, **kwargs)

    monkeypatch.setattr(embed_run, "features", dies_on_the_fifth_batch)
    with pytest.raises(KeyboardInterrupt):
        vitkit.embed(model, data, out=tmp_path / "resumed", shard_rows=4, batch_size=3)
    assert sorted(shard_bytes(tmp_path / "resumed")) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert not list((tmp_path / "resumed").glob(".*tmp"))  # no half-written file left behind

    calls["forward"] = -100  # no more deaths
    vitkit.embed(model, data, out=tmp_path / "resumed", shard_rows=4, batch_size=3)
    assert calls["forward"] == -100 + 5  # shards 2, 3 (two batches each) and 4 (one batch of two rows) alone
    assert shard_bytes(tmp_path / "resumed") == shard_bytes(straight)
    assert (tmp_path / "resumed" / "index.csv").read_bytes() == (straight / "index.csv").read_bytes()


def test_out_holding_other_embeddings_is_refused(tmp_path: Path) -> None:
    x = torch.randn(3, 3, 16, 16)
    out = vitkit.embed(tower("token", seed=0), x, out=tmp_path / "emb")
    with pytest.raises(ValueError, match="holds embeddings of another model"):
        vitkit.embed(tower("token", seed=1), x, out=out)
    with pytest.raises(ValueError, match=r"other settings \(features differ\)"):
        vitkit.embed(tower("token", seed=0), x, out=out, pool="avg")
    assert load_embeddings(out)[0].shape == (3, 32)  # untouched


def test_load_embeddings_of_an_unfinished_directory_says_how_to_finish(tmp_path: Path) -> None:
    out = vitkit.embed(tower("token"), torch.randn(5, 3, 16, 16), out=tmp_path / "emb", shard_rows=2)
    (out / "shard-00001.safetensors").unlink()
    with pytest.raises(ValueError, match=r"incomplete \(1 of 3 shards missing\); run the same vitkit embed"):
        load_embeddings(out)
    with pytest.raises(FileNotFoundError, match=r"embed_config\.json not found"):
        load_embeddings(tmp_path / "nothing")


# ---------------------------------------------------------------- kNN and probe


def brute_force_knn(train, labels, val, k, temperature, classes):
    train, val = F.normalize(train, dim=1), F.normalize(val, dim=1)
    scores = torch.zeros(len(val), classes, dtype=torch.float64)
    for i, row in enumerate(val):
        sims = [(float(row @ t), int(y)) for t, y in zip(train, labels, strict=True)]
        for sim, y in sorted(sims, reverse=True)[:k]:
            scores[i, y] += np.exp(sim / temperature)
    return scores


def test_knn_equals_a_brute_force_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    train, val = torch.randn(40, 6, generator=gen), torch.randn(11, 6, generator=gen)
    labels = torch.randint(0, 4, (40,), generator=gen)
    got = knn(train, labels, val, ks=(1, 5, 10), temperature=0.1, num_classes=4, chunk=3)
    for k, scores in got.items():
        torch.testing.assert_close(scores.double(), brute_force_knn(train, labels, val, k, 0.1, 4), rtol=1e-4, atol=0)


def test_probe_separates_separable_classes_and_picks_c_on_held_out_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=gen) * 4
    labels = torch.arange(60) % 3
    train = centres[labels] + torch.randn(60, 8, generator=gen) * 0.3
    val = centres[labels[:30]] + torch.randn(30, 8, generator=gen) * 0.3
    probs, c, held_out = probe(train, labels, val)
    assert probs.shape == (30, 3) and c in held_out and held_out[c] == max(held_out.values())
    assert Scores.of(probs, labels[:30]).top1 == 1.0


# ---------------------------------------------------------------- CLI


def test_cli_embed_knn_probe_on_class_folders(tmp_path: Path) -> None:
    for split in ("train", "val"):
        image_folder(tmp_path / "data" / split, per_class=6, classes=("a", "b", "c"))
    checkpoint = saved_model(tmp_path / "model")
    for split in ("train", "val"):
        result = invoke("embed", "--checkpoint", checkpoint, "--data", tmp_path / "data", "--split", split, "--out",
                        tmp_path / split, "--workers", "0", "--shard-rows", "5", "--l2")
        assert result.exit_code == 0, result.output
    matrix, index = load_embeddings(tmp_path / "val")
    assert matrix.shape == (18, 32) and index.classes == ["a", "b", "c"]
    torch.testing.assert_close(matrix.norm(dim=1), torch.ones(18), atol=1e-5, rtol=0)
    result = invoke("knn", "--train", tmp_path / "train", "--val", tmp_path / "val", "-k", "1,3", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["results"]) == {"k=1", "k=3"}
    assert set(report["results"]["k=1"]["per_class"]) == {"a", "b", "c"}
    result = invoke("probe", "--train", tmp_path / "train", "--val", tmp_path / "val")
    assert result.exit_code == 0, result.output
    assert "top-1" in result.stdout and "top-5" in result.stdout


def test_cli_model_name_with_pretrained_weights(tmp_path: Path) -> None:
    image_folder(tmp_path / "images", per_class=2)
    model = vitkit.create_model("vit_digits")
    vitkit.save_pretrained(realistic_(model), tmp_path / "weights")
    result = invoke("embed", "--model", "vit_digits", "--pretrained", tmp_path / "weights" / "model.safetensors",
                    "--data", tmp_path / "images", "--out", tmp_path / "emb", "--workers", "0", "--pool", "avg")
    assert result.exit_code == 0, result.output
    assert load_embeddings(tmp_path / "emb")[0].shape == (4, model.num_features)


BAD = [
    ("empty-folder", lambda t, m: ["--checkpoint", m, "--data", (t / "empty").mkdir() or t / "empty"],
     ("holds no images",)),
    ("layer-out-of-range", lambda t, m: ["--checkpoint", m, "--data", image_folder(t / "i", 1), "--layer", "7"],
     ("--layer 7 is out of range", "model of 3 blocks")),
    ("unknown-pool", lambda t, m: ["--checkpoint", m, "--data", image_folder(t / "i", 1), "--pool", "cls"],
     ("unknown pool 'cls'",)),
    ("no-model", lambda t, m: ["--data", image_folder(t / "i", 1)], ("--checkpoint DIR, or",)),
    ("no-images", lambda t, m: ["--checkpoint", m], ("--data FOLDER",)),
    ("split-without-splits", lambda t, m: ["--checkpoint", m, "--data", image_folder(t / "i", 1), "--split", "val"],
     ("--split val needs",)),
    ("digits-without-split", lambda t, m: ["--checkpoint", m, "--data", "digits"], ("--split train or --split val",)),
    ("data-is-a-file", lambda t, m: ["--checkpoint", m, "--data", next(image_folder(t / "i", 1).rglob("*.png"))],
     ("is a file", "give image files as arguments")),
    ("missing-file", lambda t, m: ["--checkpoint", m, t / "nope.png"], ("image not found",)),
]


@pytest.mark.parametrize(("args", "fragments"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_cli_bad_input_is_one_line(tmp_path: Path, args, fragments) -> None:
    checkpoint = saved_model(tmp_path / "model")
    result = invoke("embed", *args(tmp_path, checkpoint), "--out", tmp_path / "emb", "--workers", "0")
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    assert not (tmp_path / "emb").exists()


def test_cli_out_of_another_model_is_one_line(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "images", per_class=1)
    first, second = saved_model(tmp_path / "m1", seed=0), saved_model(tmp_path / "m2", seed=1)
    assert invoke("embed", "--checkpoint", first, "--data", data, "--out", tmp_path / "emb",
                  "--workers", "0").exit_code == 0
    result = invoke("embed", "--checkpoint", second, "--data", data, "--out", tmp_path / "emb", "--workers", "0")
    assert result.exit_code == 1 and "holds embeddings of another model" in result.stderr


@pytest.mark.slow
def test_two_process_torchrun_writes_what_one_process_writes(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "images", per_class=8)  # 16 rows, shards of 3: 6 shards over 2 ranks
    checkpoint = saved_model(tmp_path / "model")
    common = ["-m", "vitkit", "embed", "--checkpoint", str(checkpoint), "--data", str(data), "--shard-rows", "3",
              "--batch-size", "2", "--workers", "0", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          *common, "--out", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    assert shard_bytes(tmp_path / "two") == shard_bytes(tmp_path / "one") and len(shard_bytes(tmp_path / "one")) == 6
    a, _ = load_embeddings(tmp_path / "one")
    b, _ = load_embeddings(tmp_path / "two")
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert (tmp_path / "two" / "index.csv").read_text() == (tmp_path / "one" / "index.csv").read_text()
