"""Qwen-VL's sizing rule: `smart_resize` gives transformers' sizes for every aspect ratio and pixel bound,
`SmartResize` gives Qwen2-VL's (torchvision) image processor's pixels on real photos, and a data config states
the rule with `min_pixels` / `max_pixels` / `resize_factor`."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from torchvision.transforms import v2
from transformers import Qwen2VLImageProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

import vitkit
from vitkit.data import DataConfig, SmartResize, eval_transform, smart_resize
from vitkit.data.transforms import FitWithin, NaFlexResize

# (factor, min_pixels, max_pixels). Qwen2.5-VL's checkpoints: patch 14 x merge 2, 56 x 56 .. 12845056 pixels;
# the processor's own default max is 28 * 28 * 1280. Qwen3-VL's checkpoints: patch 16 x merge 2, 65536 .. 16777216.
QWEN25 = (28, 3136, 12845056)
QWEN25_DEFAULT = (28, 56 * 56, 28 * 28 * 1280)
QWEN3 = (32, 65536, 16777216)
SETTINGS = [QWEN25, QWEN25_DEFAULT, QWEN3, (32, 3136, 1003520), (28, 28 * 28 * 1000, 28 * 28 * 1024)]
# Sizes where evaluating HF's formula in another float order gives another answer (found by search):
# sqrt(h * w) / sqrt(max), h / (beta * factor), 1 / sqrt(h * w / min), h * (beta / factor).
FLOAT_ORDER = [(11835, 263, 28, 3136, 1003520), (9801, 30976, *QWEN25), (17, 17, *QWEN25), (7, 175, *QWEN25)]


def sizes() -> list[tuple[int, int]]:
    """Tiny, ordinary and huge images; every aspect ratio from 1:199 to 199:1 (and 200:1, still allowed); sides
    at and around multiples of 28 and 32, where round-half-even and floor / ceil part ways."""
    pairs = set()
    for short, ratio in itertools.product([1, 2, 3, 5, 14, 28, 29, 100], [1, 2, 3, 7, 50, 100, 150, 199, 200]):
        pairs |= {(short, short * ratio), (short * ratio, short)}
    sides = [1, 7, 13, 14, 15, 27, 42, 56, 70, 83, 100, 224, 427, 640, 1000, 3584, 4096, 8000, 20000]
    pairs |= {(h, w) for h, w in itertools.product(sides, sides) if max(h, w) / min(h, w) <= 200}
    rng = random.Random(0)
    while len(pairs) < 700:
        h, w = rng.randint(1, 30000), rng.randint(1, 30000)
        if max(h, w) / min(h, w) <= 200:
            pairs.add((h, w))
    return sorted(pairs)


@pytest.mark.parametrize(("factor", "min_pixels", "max_pixels"), SETTINGS)
def test_smart_resize_is_transformers_size_for_every_aspect_ratio(factor: int, min_pixels: int,
                                                                  max_pixels: int) -> None:
    branches = {"round": 0, "floor": 0, "ceil": 0}
    for height, width in sizes():
        want = hf_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        assert smart_resize(height, width, factor, min_pixels, max_pixels) == want, (height, width)
        rounded = round(height / factor) * factor * round(width / factor) * factor
        branches["floor" if rounded > max_pixels else "ceil" if rounded < min_pixels else "round"] += 1
    assert all(branches.values()), branches  # the sweep takes each of the three paths


@pytest.mark.parametrize(("height", "width", "factor", "min_pixels", "max_pixels"), FLOAT_ORDER)
def test_smart_resize_does_transformers_float_arithmetic_in_its_order(height: int, width: int, factor: int,
                                                                      min_pixels: int, max_pixels: int) -> None:
    want = hf_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    assert smart_resize(height, width, factor, min_pixels, max_pixels) == want


def test_round_half_even_and_the_pixel_bounds() -> None:
    assert smart_resize(42, 70, 28, 1, 10**9) == (56, 56)  # 1.5 -> 2 and 2.5 -> 2: round half to even
    assert smart_resize(98, 126, 28, 1, 10**9) == (112, 112)  # 3.5 -> 4, 4.5 -> 4
    h, w = smart_resize(4000, 3000, *QWEN25_DEFAULT)
    assert h * w <= QWEN25_DEFAULT[2] and h % 28 == w % 28 == 0
    h, w = smart_resize(10, 20, *QWEN3)
    assert h * w >= QWEN3[1] and h % 32 == w % 32 == 0 and h < w


@pytest.mark.parametrize(("height", "width"), [(1, 201), (201, 1), (2, 403), (1000, 4), (5, 20000)])
def test_an_aspect_ratio_over_200_is_refused_as_transformers_refuses_it(height: int, width: int) -> None:
    with pytest.raises(ValueError, match="absolute aspect ratio"):
        hf_smart_resize(height, width, *QWEN25)
    with pytest.raises(ValueError, match=rf"{height} x {width} image has an aspect ratio of .* over the 200"):
        smart_resize(height, width, *QWEN25)
    assert smart_resize(1, 200, *QWEN25) == hf_smart_resize(1, 200, *QWEN25)  # 200 itself is allowed


def test_an_empty_image_is_refused() -> None:
    with pytest.raises(ValueError, match="positive sides, got 0 x 5"):
        smart_resize(0, 5, *QWEN25)


# -- the processor's pixels ------------------------------------------------------------------------------------------


def qwen_patches(image: torch.Tensor, patch: int, merge: int, temporal: int) -> torch.Tensor:
    """(C, H, W) -> Qwen2-VL's pixel_values rows: merge blocks in row-major order, the merge x merge patches of a
    block row-major within it, each patch flattened as (channel, frame, row, column), the still image repeated
    over `temporal` frames (`Qwen2VLImageProcessor.patchify`)."""
    c, h, w = image.shape
    x = image.reshape(c, h // patch // merge, merge, patch, w // patch // merge, merge, patch)
    x = x.permute(1, 4, 2, 5, 0, 3, 6)  # (h / merge, w / merge, merge, merge, C, p, p)
    x = x.unsqueeze(5).expand(-1, -1, -1, -1, -1, temporal, -1, -1)
    return x.reshape(-1, c * temporal * patch * patch)


# (patch, min_pixels, max_pixels, mean, std): Qwen2.5-VL's checkpoints and processor default (the 427 x 640 photos
# keep their rounded size), a bound that shrinks them (floor) and one that enlarges them (ceil); Qwen3-VL's.
PROCESSORS = [(14, *QWEN25[1:], OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
              (14, *QWEN25_DEFAULT[1:], OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
              (14, 3136, 28 * 28 * 64, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
              (14, 28 * 28 * 1000, 28 * 28 * 4000, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
              (16, *QWEN3[1:], [0.5] * 3, [0.5] * 3)]


@pytest.mark.parametrize(("patch", "min_pixels", "max_pixels", "mean", "std"), PROCESSORS)
def test_the_transform_gives_the_processors_pixels_on_real_photos(patch: int, min_pixels: int, max_pixels: int,
                                                                  mean: list[float], std: list[float]) -> None:
    processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch, merge_size=2,
                                      temporal_patch_size=2, image_mean=mean, image_std=std)
    data = DataConfig((224, 224), 3, tuple(mean), tuple(std), patch_size=(patch, patch), min_pixels=min_pixels,
                      max_pixels=max_pixels, resize_factor=patch * 2)
    transform = eval_transform(data, keep_aspect=True)  # what `vitkit eval` / `embed` run on a packed batch
    for photo in load_sample_images().images:  # scikit-learn's bundled photographs (427 x 640)
        out = processor(images=[Image.fromarray(photo)], return_tensors="pt")
        mine = transform(Image.fromarray(photo))
        assert [1, mine.shape[1] // patch, mine.shape[2] // patch] == out["image_grid_thw"][0].tolist()
        # vitkit normalises as timm, x / 255 - mean then / std; the processor as (x - 255 mean) / (255 std):
        # the same pixels, float32 rounding apart (measured 2.4e-7)
        torch.testing.assert_close(qwen_patches(mine, patch, 2, 2), out["pixel_values"], rtol=0, atol=1e-6)
        # the resized uint8 pixels are the processor's to the bit: normalised its way they are its numbers exactly
        resized = SmartResize(patch * 2, min_pixels, max_pixels)(Image.fromarray(photo))
        assert resized.dtype == torch.uint8
        theirs = (resized.float() - (torch.tensor(mean) * 255.0).view(-1, 1, 1)) / (torch.tensor(std) * 255.0).view(
            -1, 1, 1)
        assert torch.equal(qwen_patches(theirs, patch, 2, 2), out["pixel_values"])


def test_the_transform_takes_tensors_and_keeps_their_dtype() -> None:
    image = torch.randint(0, 256, (3, 50, 900), dtype=torch.uint8)
    out = SmartResize(28, 3136, 28 * 28 * 16)(image)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (3, *smart_resize(50, 900, 28, 3136, 28 * 28 * 16))
    out = SmartResize(32, *QWEN3[1:])(image.float() / 255)
    assert out.dtype == torch.float32 and tuple(out.shape) == (3, *smart_resize(50, 900, *QWEN3))


# -- the data config -------------------------------------------------------------------------------------------------


def qwen_data(**fields: object) -> DataConfig:
    return DataConfig((224, 224), 3, (0.5,) * 3, (0.5,) * 3, patch_size=(16, 16), **fields)


def test_the_data_config_with_pixel_bounds_sizes_packed_images_by_smart_resize() -> None:
    data = qwen_data(min_pixels=65536, max_pixels=16777216, resize_factor=32)
    fit = data.fit(v2.InterpolationMode.BICUBIC)
    assert isinstance(fit, SmartResize)
    assert (fit.factor, fit.min_pixels, fit.max_pixels) == (32, 65536, 16777216)
    assert data.max_tokens(0) == 4 * 16777216 // 256 and data.max_tokens(1) == 4 * (16777216 // 256 + 1)
    assert tuple(fit(torch.zeros(3, 427, 640)).shape[1:]) == (416, 640)
    assert isinstance(qwen_data(min_pixels=1, max_pixels=4).fit(v2.InterpolationMode.BICUBIC), SmartResize)
    assert qwen_data(min_pixels=1, max_pixels=4)._factor == 16  # no resize_factor: the patch size
    assert isinstance(qwen_data().fit(v2.InterpolationMode.BICUBIC), FitWithin)
    assert isinstance(qwen_data(max_patches=256).fit(v2.InterpolationMode.BICUBIC), NaFlexResize)


@pytest.mark.parametrize(("fields", "message"), [
    ({"min_pixels": 0, "max_pixels": 10}, r"min_pixels must be a positive integer .* got 0"),
    ({"min_pixels": 1, "max_pixels": 10.5}, r"max_pixels must be a positive integer .* got 10.5"),
    ({"min_pixels": True, "max_pixels": 10}, r"min_pixels must be a positive integer .* got True"),
    ({"min_pixels": 1, "max_pixels": 10, "resize_factor": -32}, r"resize_factor must be a positive integer"),
    ({"min_pixels": 3136}, "min_pixels and max_pixels go together"),
    ({"max_pixels": 3136}, "min_pixels and max_pixels go together"),
    ({"min_pixels": 100, "max_pixels": 99}, r"min_pixels \(100\) must be <= max_pixels \(99\)"),
    ({"min_pixels": 1, "max_pixels": 10, "max_patches": 256}, "two sizing rules .* set one of them"),
    ({"min_pixels": 1, "max_pixels": 10, "resize_factor": 28}, r"resize_factor \(28\) must be a multiple of the "
                                                               r"patch size \(16, 16\)"),
])
def test_bad_pixel_bounds_are_refused_with_the_fix(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        qwen_data(**fields)


def test_the_data_config_of_a_model_reads_its_pixel_bounds_and_merge_size() -> None:
    config = vitkit.models.get_config("vit_tiny_patch16_224")
    plain = DataConfig.of(config)  # a model without the rule (or from before the fields existed)
    assert (plain.min_pixels, plain.max_pixels, plain.resize_factor) == (None, None, 16)
    assert isinstance(plain.fit(v2.InterpolationMode.BICUBIC), FitWithin)
    # the fields read with getattr: a stand-in carrying them works whether or not ViTConfig has them yet
    qwen = SimpleNamespace(**{**dataclasses.asdict(config), "min_pixels": 65536, "max_pixels": 16777216,
                              "merge_size": 2})
    data = DataConfig.of(qwen)
    assert (data.min_pixels, data.max_pixels, data.resize_factor) == (65536, 16777216, 32)
    assert isinstance(data.fit(v2.InterpolationMode.BICUBIC), SmartResize)
    # a patch budget given to `of` (--max-patches) replaces the model's own sizing rule
    budget = DataConfig.of(qwen, 256)
    assert (budget.max_patches, budget.min_pixels, budget.max_pixels) == (256, None, None)
    assert isinstance(budget.fit(v2.InterpolationMode.BICUBIC), NaFlexResize)


def test_a_vit_config_with_pixel_bounds_gives_the_rule() -> None:
    config = vitkit.models.ViTConfig(img_size=56, patch_size=14, embed_dim=32, depth=1, num_heads=2, class_token=False,
                                     global_pool="avg", min_pixels=3136, max_pixels=12845056, merge_size=2,
                                     merge_dim=64)
    data = DataConfig.of(config)
    assert (data.min_pixels, data.max_pixels, data.resize_factor) == (3136, 12845056, 28)
    assert data.max_tokens(0) == 4 * math.floor(12845056 / 196)
