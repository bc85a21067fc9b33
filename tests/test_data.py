"""Data: sharded global batches, bundled digits, image folders and their preprocessing."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data import DataConfig, ShardedBatchSampler, digits, image_folder

GREY8 = DataConfig((8, 8), 1, (0.5,), (0.5,))


@pytest.mark.parametrize("world", [1, 2, 4])
def test_ranks_together_see_the_single_process_batches(world: int) -> None:
    single = list(ShardedBatchSampler(50, 8, seed=3))
    shards = [list(ShardedBatchSampler(50, 8, rank=r, world=world, seed=3)) for r in range(world)]
    assert all(len(s) == len(single) == 6 for s in shards)  # 50 // 8, last partial batch dropped
    for step, batch in enumerate(single):
        assert list(itertools.chain.from_iterable(s[step] for s in shards)) == batch


def test_epochs_reshuffle_and_resume_skips_done_batches() -> None:
    sampler = ShardedBatchSampler(40, 8, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    flat = [sorted(itertools.chain.from_iterable(epoch)) for epoch in (first, second)]
    assert first != second and flat[0] == flat[1] == list(range(40))
    sampler.set_epoch(1, start_batch=3)
    assert list(sampler) == second[3:]


def test_eval_sampling_keeps_every_sample_once() -> None:
    shards = [list(ShardedBatchSampler(21, 8, rank=r, world=2, shuffle=False, drop_last=False)) for r in range(2)]
    seen = sorted(i for shard in shards for batch in shard for i in batch)
    assert seen == list(range(21))


def test_batch_must_split_evenly() -> None:
    with pytest.raises(ValueError, match="divisible"):
        ShardedBatchSampler(10, 5, world=2)


def test_digits_split_is_fixed_stratified_80_20() -> None:
    a, b = digits(GREY8), digits(GREY8)
    assert len(a.train) == 1437 and len(a.val) == 360 and a.classes == [str(d) for d in range(10)]
    assert a.val.labels == b.val.labels
    counts = np.bincount(a.val.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified
    x, label = a.val[0]
    assert x.shape == (1, 8, 8) and x.min() >= -1.0 and x.max() <= 1.0 and isinstance(label, int)


def test_digits_need_a_grey_model() -> None:
    with pytest.raises(ValueError, match="in_chans=1"):
        digits(DataConfig((8, 8), 3, (0.5,) * 3, (0.5,) * 3))


def test_folder_augmentation_depends_only_on_seed_epoch_and_index(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                pixels = np.random.default_rng(i).integers(0, 256, (30, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / c / f"{i}.png")
    rgb = DataConfig((16, 16), 3, (0.5,) * 3, (0.5,) * 3)
    splits = image_folder(tmp_path, rgb, seed=7)
    assert splits.classes == ["a", "b"] and len(splits.train) == len(splits.val) == 4
    x1, _ = splits.train[(0, 2)]
    x2, _ = image_folder(tmp_path, rgb, seed=7).train[(0, 2)]
    assert x1.shape == (3, 16, 16) and torch.equal(x1, x2)
    assert not torch.equal(x1, splits.train[(1, 2)][0])  # another epoch, another view
    assert splits.val[0][0].shape == (3, 16, 16)


def test_folder_with_train_but_no_val(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "train" / "a" / "x.png")
    with pytest.raises(FileNotFoundError, match="val/"):
        image_folder(tmp_path, GREY8)
