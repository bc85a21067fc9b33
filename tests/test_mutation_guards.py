"""Behaviour that a one-line bug could break without any other test noticing (the mutants of tests/README.md):
the probe ignores the scale of rows and chooses C on rows it did not fit, a short shard is redone on resume, and
random erasing happens at the rate asked for."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import vitkit
from interop_helpers import realistic_
from vitkit.data import Augment, DataConfig, train_transform
from vitkit.data.transforms import sample_seed, seeded
from vitkit.embeddings import load_embeddings, probe

# ---------------------------------------------------------------- the probe


def overlapping_classes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of 3 classes whose clusters overlap, so the probe's probabilities are far from 0 and 1."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.randn(3, 6, generator=gen)
    return centres[labels] + torch.randn(n, 6, generator=gen), labels


def test_probe_answer_does_not_change_when_rows_are_scaled() -> None:
    train, labels = overlapping_classes(90, seed=0)
    val, _ = overlapping_classes(30, seed=1)
    probs, c, held_out = probe(train, labels, val)
    assert probs.min() > 0.05 and probs.max() < 0.95  # not saturated: a change of scale would show
    gen = torch.Generator().manual_seed(2)
    val_scale = 10.0 ** torch.empty(len(val), 1).uniform_(-2, 2, generator=gen)  # a different factor per row
    train_scale = 10.0 ** torch.empty(len(train), 1).uniform_(-2, 2, generator=gen)
    scaled_val = probe(train, labels, val * val_scale)
    assert scaled_val[1:] == (c, held_out)
    torch.testing.assert_close(scaled_val[0], probs, atol=1e-6, rtol=0)
    scaled_both = probe(train * train_scale, labels, val * val_scale)
    assert scaled_both[1] == c
    torch.testing.assert_close(scaled_both[0], probs, atol=1e-4, rtol=0)


def test_probe_chooses_c_on_held_out_rows_so_random_labels_score_near_chance() -> None:
    from sklearn.linear_model import LogisticRegression

    gen = torch.Generator().manual_seed(0)
    train, val = torch.randn(200, 128, generator=gen), torch.randn(40, 128, generator=gen)
    labels = torch.randint(0, 4, (200,), generator=gen)  # 4 classes of nothing: chance is 0.25
    x = torch.nn.functional.normalize(train, dim=1).numpy()
    # the premise: at this size the rows a model is fit on are learned by heart at the weakest regularisation
    assert (LogisticRegression(C=1000.0, max_iter=2000).fit(x, labels.numpy()).predict(x) == labels.numpy()).all()
    probs, c, held_out = probe(train, labels, val)
    assert set(held_out) == {0.01, 0.1, 1.0, 10.0, 100.0, 1000.0} and c in held_out
    # 40 held-out rows: every score of C is near chance (P(>= 20 of 40 at p=0.25) < 1e-3), nothing learned by heart
    assert max(held_out.values()) <= 0.5, held_out
    assert probs.shape == (40, 4)


# ---------------------------------------------------------------- a short shard on resume

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=5, dynamic_img_size=True)


def shard_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.safetensors"))}


def cut_short(path: Path, keep: int) -> None:
    """Rewrite a shard with its run's key but only its first `keep` rows (a shard cut off by a crash or a copy)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    if "lengths" in tensors:  # rows of different lengths: their tokens one after another
        lengths = tensors["lengths"][:keep]
        tensors = {"embeddings": tensors["embeddings"][: int(lengths.sum())].clone(), "lengths": lengths.clone()}
    else:
        tensors = {"embeddings": tensors["embeddings"][:keep].clone()}
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("pool", ["token", "none"])
def test_a_short_shard_is_redone_on_resume_and_the_result_equals_a_straight_run(tmp_path: Path, pool: str) -> None:
    model = realistic_(vitkit.VisionTransformer(**TINY), seed=0)
    gen = torch.Generator().manual_seed(0)
    sizes = [(16, 16), (8, 20), (24, 12), (16, 8), (12, 12), (20, 4), (16, 16), (8, 8), (4, 28), (12, 16)]
    images = [torch.randn(3, h, w, generator=gen) for h, w in sizes]  # 10 rows: shards of 4, 4 and 2
    kwargs = dict(pool=pool, shard_rows=4, batch_size=3, packing=True, max_tokens=64)
    straight = vitkit.embed(model, images, out=tmp_path / "straight", **kwargs)
    if pool == "none":
        assert isinstance(load_embeddings(straight)[0], list)  # rows of different lengths (a "lengths" tensor)
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    cut_short(resumed / "shard-00001.safetensors", keep=2)
    assert shard_files(resumed)["shard-00001.safetensors"] != shard_files(straight)["shard-00001.safetensors"]

    embedded: list[tuple[int, int]] = []
    vitkit.embed(model, images, out=resumed, progress=lambda rows, total: embedded.append((rows, total)), **kwargs)
    assert sum(rows for rows, _ in embedded) == 4 and {total for _, total in embedded} == {4}  # shard 1 alone
    assert shard_files(resumed) == shard_files(straight)
    got, want = load_embeddings(resumed)[0], load_embeddings(straight)[0]
    assert len(got) == len(want) == 10
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- random erasing

RGB32 = DataConfig((32, 32), 3, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), crop_pct=0.875, interpolation="bicubic")


def erased(reprob: float, draws: int) -> int:
    """How many of `draws` seeded training views of one image random erasing changed: each view is compared with
    the view of the same seed made without erasing (erasing is the last step, so everything else is the same)."""
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 40, 52), dtype=np.uint8))
    plain = train_transform(RGB32, Augment(reprob=0.0, scale=(0.3, 1.0)))
    erasing = train_transform(RGB32, Augment(reprob=reprob, scale=(0.3, 1.0)))
    count = 0
    for index in range(draws):
        seed = sample_seed(7, 0, index)
        count += not torch.equal(seeded(erasing, image, seed=seed), seeded(plain, image, seed=seed))
    return count


def test_random_erasing_happens_at_the_rate_asked_for() -> None:
    assert erased(1.0, 100) == 100
    assert erased(0.0, 100) == 0
    # Binomial(400, 0.25): mean 100, sd 8.7; the band is 4 sd each side (1 - 1e-4 of seeds land in it)
    assert 65 <= erased(0.25, 400) <= 135
