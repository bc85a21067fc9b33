"""The fine-tuning recipe: torchvision augmentation seeded per sample, mixup/cutmix, EMA, layer decay, freezing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from vitkit import create_model
from vitkit.data import Augment, BatchMix, DataConfig, ShardedBatchSampler, image_folder
from vitkit.data.augment import RandAugment, auto_augment
from vitkit.train import TrainOptions, train
from vitkit.train.ema import ModelEma
from vitkit.train.optim import build_optimizer, freeze, layer_id

RGB32 = DataConfig((32, 32), 3, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), crop_pct=0.875, interpolation="bicubic")
RECIPE = Augment(aa="rand-m9-mstd0.5-inc1", reprob=0.25, color_jitter=0.4, scale=(0.3, 1.0))
# A small ViT for 32-px folders, built through --set as users would.
TINY = ("img_size=32", "patch_size=8", "depth=2", "embed_dim=32", "num_heads=2")


def photo_folder(root: Path, classes: int = 2, per_class: int = 6, size: tuple[int, int] = (40, 52)) -> Path:
    """root/train|val/<class>/*.jpg of random pictures whose mean colour gives the class away."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 128, (*size, 3)) + 100 * (np.arange(3) == c % 3)
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / split / f"c{c}" / f"{i}.jpg")
    return root


def batches(dataset, workers: int, epoch: int) -> list[torch.Tensor]:
    sampler = ShardedBatchSampler(len(dataset), 4, seed=3, epoch_keys=True)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0)
    out = []
    for e in range(epoch + 1):  # persistent workers see every epoch through the keys, not through an attribute
        sampler.set_epoch(e)
        out = [images for images, _ in loader]
    return out


@pytest.mark.slow
def test_training_views_depend_only_on_seed_epoch_and_index(tmp_path: Path) -> None:
    splits = image_folder(photo_folder(tmp_path), RGB32, seed=5, augment=RECIPE)
    one = batches(splits.train, 0, epoch=1)
    two = batches(splits.train, 2, epoch=1)
    assert len(one) == 3 and all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
    assert not torch.equal(torch.cat(one), torch.cat(batches(splits.train, 0, epoch=0)))  # epochs differ
    x, _ = splits.train[(1, 4)]
    assert torch.equal(x, splits.train[(1, 4)][0]) and x.shape == (3, 32, 32)
    other = image_folder(tmp_path, RGB32, seed=6, augment=RECIPE).train[(1, 4)][0]
    assert not torch.equal(x, other)  # the seed matters
    assert torch.equal(splits.val[0][0], splits.val[0][0])  # evaluation is not random


@pytest.mark.parametrize("spec", ["rand-m9-mstd0.5-inc1", "rand-m7-n3", "trivial", "augmix", "augmix-m5-w2", "none"])
def test_auto_augment_takes_timms_spelling(spec: str) -> None:
    transform = auto_augment(spec)
    image = torch.randint(0, 256, (3, 24, 20), dtype=torch.uint8)
    if transform is None:
        assert spec == "none"
        return
    for seed in range(4):  # every op of the set, on tensors and on PIL images
        torch.manual_seed(seed)
        assert transform(image).shape == image.shape
        assert transform(Image.fromarray(image.permute(1, 2, 0).numpy())).size == (20, 24)


@pytest.mark.parametrize("spec", ["rand-x9", "rand-m11", "rand-m9-inc0", "autoaug", "trivial-m3", "rand-mfoo"])
def test_bad_auto_augment_names_the_option(spec: str) -> None:
    with pytest.raises(ValueError, match="--aa"):
        Augment(aa=spec)


def test_rand_augment_magnitude_is_on_timms_scale_with_noise() -> None:
    fixed = RandAugment(2, 9, 0.0)
    assert fixed.magnitude == 90 and fixed.num_magnitude_bins == 101  # m9 = 90% of each op's range
    noisy = RandAugment(2, 9, 0.5)
    drawn = set()
    for seed in range(40):
        torch.manual_seed(seed)
        noisy(torch.zeros(3, 8, 8, dtype=torch.uint8))
        drawn.add(noisy.magnitude)
    assert len(drawn) > 3 and all(80 <= m <= 100 for m in drawn)  # N(9, 0.5) on the 0..10 scale


@pytest.mark.parametrize(("mixup", "cutmix", "prob"), [(0.8, 0.0, 1.0), (0.0, 1.0, 1.0), (0.8, 1.0, 0.6)])
def test_mixed_targets_sum_to_one_and_weigh_the_images(mixup: float, cutmix: float, prob: float) -> None:
    mix = BatchMix(5, mixup=mixup, cutmix=cutmix, prob=prob)
    images = torch.rand(6, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    seen_mixed = False
    for seed in range(20):
        mixed, targets = mix(images.clone(), labels, seed)
        assert targets.shape == (6, 5) and (targets >= 0).all()
        torch.testing.assert_close(targets.sum(dim=1), torch.ones(6))
        lam = targets[1, 1].item()  # image 1 is mixed with image 0 (the batch rolled by one)
        torch.testing.assert_close(targets[1, 0], torch.tensor(1 - lam))
        if lam == 1.0:
            assert torch.equal(mixed, images)
            continue
        seen_mixed = True
        blend = lam * images[1] + (1 - lam) * images[0]
        if not torch.allclose(mixed[1], blend, atol=1e-6):  # cutmix: a box of image 0 pasted into image 1
            own = (mixed[1] == images[1]).all(dim=0)  # (H, W): pixels still its own
            assert own.float().mean().item() == pytest.approx(lam, abs=1e-6)  # the label weight is their share
            assert torch.equal(mixed[1][:, ~own], images[0][:, ~own])
            assert mixup == 0.0 or cutmix > 0.0
        again, again_targets = mix(images.clone(), labels, seed)
        assert torch.equal(again, mixed) and torch.equal(again_targets, targets)  # a function of the seed
    assert seen_mixed


def test_mix_bad_values_name_the_option() -> None:
    for kwargs, option in (({"mixup": -1.0}, "--mixup"), ({"prob": 1.5}, "--mixup-prob"),
                           ({"switch_prob": -0.1}, "--mixup-switch-prob")):
        with pytest.raises(ValueError, match=option):
            BatchMix(3, **kwargs)


def test_ema_equals_its_closed_form() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    decay = 0.9
    ema = ModelEma(model, decay)
    history = [{k: v.clone() for k, v in model.state_dict().items()}]
    for _ in range(7):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        history.append({k: v.clone() for k, v in model.state_dict().items()})
        ema.update(model)
    n = len(history) - 1
    for key in history[0]:
        expected = decay**n * history[0][key] + sum((1 - decay) * decay ** (n - t) * history[t][key]
                                                    for t in range(1, n + 1))
        torch.testing.assert_close(ema.state_dict()[key], expected, rtol=1e-6, atol=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_layer_decay_gives_each_group_its_rate() -> None:
    model = create_model("vit_tiny_patch16_224", depth=3, img_size=32, patch_size=8, num_classes=4)
    lr, decay, depth = 1e-3, 0.75, 3
    optimizer, schedule, summary = build_optimizer(model, lr, 0.05, 100, 10, 1e-6, layer_decay=decay)
    expected_layer = {"patch_embed.proj.weight": 0, "pos_embed": 0, "cls_token": 0, "blocks.0.attn.qkv.weight": 1,
                      "blocks.2.mlp.fc2.bias": 3, "norm.weight": 4, "head.weight": 4}
    params = dict(model.named_parameters())
    names = {id(p): n for n, p in params.items()}
    rates = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            rates[names[id(p)]] = (group["lr"], group["weight_decay"])
    assert len(rates) == len(params)
    for name, layer in expected_layer.items():
        assert layer_id(name, depth) == layer
    for name, (rate, wd) in rates.items():
        scale = decay ** (depth + 1 - layer_id(name, depth))
        assert rate == pytest.approx(lr * scale * 1 / 10)  # the first warm-up step: 1/10 of each group's peak
        assert wd == (0.0 if params[name].ndim <= 1 or name in ("pos_embed", "cls_token") else 0.05)
    assert rates["head.weight"][0] == pytest.approx(lr / 10) and rates["patch_embed.proj.weight"][0] == pytest.approx(
        lr * decay**4 / 10)
    for _ in range(50):
        optimizer.step()
        schedule.step()
    ratios = {g["lr"] / (lr * g["lr_scale"]) for g in optimizer.param_groups}
    assert max(ratios) - min(ratios) < 1e-12  # the schedule scales every group alike
    assert {s.layer for s in summary} == {"stem", "block 0", "block 1", "block 2", "head"}
    assert {s.name for s in summary} >= {"stem, decay", "stem, no decay", "block 2, decay", "head, no decay"}
    assert sum(s.params for s in summary) == sum(p.numel() for p in model.parameters())


def test_without_layer_decay_the_groups_are_named_by_decay_not_by_layer() -> None:
    model = create_model("vit_tiny_patch16_224", depth=2, img_size=32, patch_size=8, num_classes=4)
    _, _, summary = build_optimizer(model, 1e-3, 0.05, 100, 10, 1e-6)
    assert [(s.name, s.weight_decay, s.lr_scale) for s in summary] == [("no decay", 0.0, 1.0), ("decay", 0.05, 1.0)]
    skip = model.no_weight_decay()
    assert summary[1].params == sum(p.numel() for n, p in model.named_parameters() if p.ndim > 1 and n not in skip)
    assert summary[0].params + summary[1].params == sum(p.numel() for p in model.parameters())


def test_freeze_patterns_and_linear_probe() -> None:
    model = create_model("vit_tiny_patch16_224", depth=2, img_size=32, patch_size=8, num_classes=3,
                         global_pool="avg", fc_norm=True)
    frozen = freeze(model, ["blocks.0.*", "patch_embed.*"])
    assert frozen and all(n.startswith(("blocks.0.", "patch_embed.")) for n in frozen)
    probe = create_model("vit_tiny_patch16_224", depth=2, img_size=32, patch_size=8, num_classes=3,
                         global_pool="avg", fc_norm=True)
    freeze(probe, [], linear_probe=True)
    assert {n for n, p in probe.named_parameters() if p.requires_grad} == {
        "head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}
    with pytest.raises(ValueError, match="--freeze"):
        freeze(model, ["block.*"])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


@pytest.mark.slow
def test_linear_probe_keeps_the_backbone_bit_identical(tmp_path: Path) -> None:
    from vitkit import save_pretrained

    base = create_model("vit_digits")
    save_pretrained(base, tmp_path / "base")
    train(TrainOptions(pretrained=str(tmp_path / "base"), linear_probe=True, epochs=1, batch_size=64,
                       out=str(tmp_path / "probe")))
    after = _weights(tmp_path / "probe" / "last.safetensors")
    before = base.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}  # average pool, then fc_norm


class InterruptAt:
    def __init__(self, step: int) -> None:
        self.at = step

    def start(self, *args: object) -> None: ...
    def epoch(self, record: dict) -> None: ...
    def close(self) -> None: ...

    def step(self, epoch: int, step: int, *args: object) -> None:
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_resume_is_exact_with_ema_and_mixup(tmp_path: Path) -> None:
    recipe = dict(epochs=2, batch_size=64, mixup=0.8, cutmix=1.0, mixup_prob=0.9, model_ema=True,
                  model_ema_decay=0.99, layer_decay=0.8, clip_grad=1.0, drop_path=0.1)
    train(TrainOptions(out=str(tmp_path / "straight"), **recipe))
    cut = train(TrainOptions(out=str(tmp_path / "cut"), **recipe), reporter=InterruptAt(30))
    assert cut.interrupted
    train(TrainOptions(), resume=tmp_path / "cut")
    for name in ("last.safetensors", "model.safetensors"):
        a, b = _weights(tmp_path / "straight" / name), _weights(tmp_path / "cut" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    state = {n: torch.load(tmp_path / n / "train_state.pt", weights_only=True) for n in ("straight", "cut")}
    assert all(torch.equal(v, state["cut"]["ema"][k]) for k, v in state["straight"]["ema"].items())
    assert [r for r in state["straight"]["records"]] == [r for r in state["cut"]["records"]]
    epochs = [r for r in state["straight"]["records"] if r["kind"] == "epoch"]
    assert all("ema_val_top1" in r for r in epochs)


@pytest.mark.slow
def test_recipe_run_saves_the_better_weights_and_says_which(tmp_path: Path) -> None:
    import json

    data = photo_folder(tmp_path / "data", classes=3, per_class=8)
    summary = train(TrainOptions(model="vit_tiny_patch16_224", overrides=TINY, data=str(data), epochs=2,
                                 batch_size=8, aa="rand-m9-mstd0.5-inc1", reprob=0.25, mixup=0.8, cutmix=1.0,
                                 model_ema=True, model_ema_decay=0.9, layer_decay=0.75, crop_pct=0.95,
                                 workers=2, out=str(tmp_path / "run")))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training"]["weights"] in ("live", "ema") and config["training"]["weights"] == summary.best_weights
    assert config["crop_pct"] == 0.95 and config["patch_size"] == [8, 8]  # --crop-pct and --set reach config.json
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = max(max(r["val_top1"], r["ema_val_top1"]) for r in records if r["kind"] == "epoch")
    assert config["training"]["val_top1"] == best == summary.best_top1


def test_workers_auto() -> None:
    assert TrainOptions().loader_workers(16) == 0  # the digits live in memory
    assert TrainOptions(data="folder").loader_workers(16) == 8
    assert TrainOptions(data="folder").loader_workers(2) == 2
    assert TrainOptions(data="folder", workers=3).loader_workers(16) == 3
    with pytest.raises(ValueError, match="--workers"):
        TrainOptions(workers="many")


@pytest.mark.parametrize(("kwargs", "option"), [
    ({"layer_decay": 0.0}, "--layer-decay"), ({"clip_grad": -1.0}, "--clip-grad"),
    ({"model_ema_decay": 1.0}, "--model-ema-decay"), ({"crop_pct": 1.5}, "--crop-pct"),
    ({"interpolation": "nearest"}, "--interpolation"), ({"overrides": ("patch_size",)}, "--set"),
    ({"reprob": 2.0}, "--reprob"), ({"scale": (0.9, 0.1)}, "--scale"), ({"mixup": 0.5, "packing": True}, "--mixup"),
])
def test_bad_recipe_options_name_the_option(kwargs: dict, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        TrainOptions(**kwargs)


def test_digits_in_memory_refuse_pixel_augmentation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="write_digits_folder"):
        train(TrainOptions(aa="trivial", epochs=1, out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()
