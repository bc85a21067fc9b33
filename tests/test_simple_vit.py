"""SimpleViT (seed 003): keyword arguments, use_flash on/off, attention backends, and weight-for-weight
parity with lucidrains' vit-pytorch through an explicit key mapping."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
import vit_pytorch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import vitkit
from interop_helpers import assert_parity, images, randomize_, realistic_
from vitkit.attention import BackendUnavailableError
from vitkit.layers import sincos_2d
from vitkit.models import SimpleViTConfig, config_from_dict

# Seed 003's keyword arguments, small.
SEED_KW: dict[str, Any] = dict(image_size=32, patch_size=8, num_classes=10, dim=64, depth=2, heads=4,
                               mlp_dim=128, channels=3, dim_head=16)

# vit-pytorch SimpleViT key -> vitkit SimpleViT key, written out (see the task's mapping).
KEY_RULES: list[tuple[str, str]] = [
    (r"^to_patch_embedding\.1\.", "patch_embed.norm_in."),
    (r"^to_patch_embedding\.2\.", "patch_embed.proj."),
    (r"^to_patch_embedding\.3\.", "patch_embed.norm."),
    (r"^transformer\.layers\.(\d+)\.0\.norm\.", r"blocks.\1.norm1."),
    (r"^transformer\.layers\.(\d+)\.0\.to_qkv\.", r"blocks.\1.attn.qkv."),
    (r"^transformer\.layers\.(\d+)\.0\.to_out\.", r"blocks.\1.attn.proj."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.0\.", r"blocks.\1.norm2."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.1\.", r"blocks.\1.mlp.fc1."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.3\.", r"blocks.\1.mlp.fc2."),
    (r"^transformer\.norm\.", "norm."),
    (r"^linear_head\.", "head."),
]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


def map_key(key: str) -> str:
    for pattern, replacement in KEY_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise KeyError(f"no mapping for vit-pytorch key {key!r}")


def small_simple_vit(**overrides: Any) -> vitkit.SimpleViT:
    torch.manual_seed(0)
    return vitkit.SimpleViT(**{**SEED_KW, **overrides})


# -- seed 003 keyword arguments -----------------------------------------------------------------


def test_seed_003_keyword_arguments() -> None:
    model = vitkit.SimpleViT(image_size=32, patch_size=8, num_classes=10, dim=64, depth=3, heads=4,
                             mlp_dim=96, channels=1, dim_head=8, use_flash=True)
    assert len(model.blocks) == 3
    block = model.blocks[0]
    assert block.attn.qkv.weight.shape == (3 * 4 * 8, 64)  # heads * dim_head, independent of dim
    assert block.attn.qkv.bias is None and block.attn.proj.bias is None  # SimpleViT has no qkv/out bias
    assert block.mlp.fc1.out_features == 96
    assert model.patch_embed.norm_in.normalized_shape == (8 * 8 * 1,)
    assert model(images(channels=1)).shape == (2, 10)


@pytest.mark.parametrize(
    ("image_size", "patch_size", "grid"), [(224, 16, (14, 14)), ((32, 48), 8, (4, 6)), ((48, 32), (16, 8), (3, 4))]
)
def test_demo_shapes_and_grids(image_size: Any, patch_size: Any, grid: tuple[int, int]) -> None:
    model = vitkit.SimpleViT(image_size=image_size, patch_size=patch_size, num_classes=1000, dim=64, depth=1,
                             heads=2, mlp_dim=128).eval()
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    x = torch.randn(1, 3, h, w)
    with torch.no_grad():
        assert model(x).shape == (1, 1000)
        assert model.forward_features(x).shape == (1, grid[0] * grid[1], 64)
    assert model.pos_embed.shape == (1, grid[0] * grid[1], 64)
    assert_close(model.pos_embed[0], sincos_2d(*grid, 64))


def test_use_flash_true_and_false_give_the_same_output() -> None:
    """Seed 003's use_flash=False crashed (einsum not imported, wrong equation); here it is the math path."""
    flash = randomize_(small_simple_vit(use_flash=True)).eval()
    plain = small_simple_vit(use_flash=False).eval()
    plain.load_state_dict(flash.state_dict())
    assert flash.config.backend == "sdpa" and plain.config.backend == "math"
    x = images()
    with torch.no_grad():
        assert_close(plain(x), flash(x))


@pytest.mark.parametrize("attention_type", ["math", "sdpa", "auto", "scaled_dot_product", "sdpa:flash"])
def test_attention_type_overrides_use_flash(attention_type: str) -> None:
    reference = randomize_(small_simple_vit(use_flash=False)).eval()
    model = small_simple_vit(use_flash=True, attention_type=attention_type).eval()
    model.load_state_dict(reference.state_dict())
    assert all(b.attn.attention_type == model.config.backend for b in model.blocks)
    x = images()
    with torch.no_grad():
        assert_close(model(x), reference(x))


@pytest.mark.parametrize("attention_type", ["flash", "xformers"])
def test_gpu_only_attention_type_raises_on_cpu(attention_type: str) -> None:
    model = small_simple_vit(attention_type=attention_type)
    with pytest.raises(BackendUnavailableError):
        model(images())


def test_forward_head_pre_logits_and_no_classifier() -> None:
    model = randomize_(small_simple_vit()).eval()
    x = images()
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        assert_close(pooled, features.mean(1))
        assert_close(model(x), model.head(pooled))
    headless = small_simple_vit(num_classes=0)
    assert headless(x).shape == (2, 64)


# -- parity with vit-pytorch --------------------------------------------------------------------


def port_from_vit_pytorch(reference: nn.Module, config: dict[str, Any]) -> vitkit.SimpleViT:
    state = {map_key(k): v for k, v in reference.state_dict().items()}
    model = vitkit.SimpleViT(**config).eval()
    model.load_state_dict(state, strict=True)
    return model


@pytest.mark.parametrize("image_size", [32, (32, 48)])
@pytest.mark.parametrize("use_flash", [True, False])
def test_matches_vit_pytorch_simple_vit(image_size: Any, use_flash: bool) -> None:
    config = dict(SEED_KW, image_size=image_size)
    reference = realistic_(vit_pytorch.SimpleViT(**config))
    model = port_from_vit_pytorch(reference, dict(config, use_flash=use_flash))
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    assert_parity(model, reference, images(height=h, width=w), model, reference, atol=1e-5)


def test_matches_vit_pytorch_simple_vit_wide_heads_and_grayscale() -> None:
    """heads * dim_head != dim, one channel, rectangular patches."""
    config = dict(image_size=(24, 32), patch_size=(8, 4), num_classes=5, dim=32, depth=2, heads=3, mlp_dim=40,
                  channels=1, dim_head=24)
    reference = realistic_(vit_pytorch.SimpleViT(**config))
    model = port_from_vit_pytorch(reference, config)
    assert_parity(model, reference, images(height=24, width=32, channels=1), model, reference, atol=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # its torch.backends.cuda.sdp_kernel is deprecated
def test_matches_seed_003_flash_vit_pytorch() -> None:
    """vit-pytorch's simple_flash_attn_vit (seed 003 itself; only use_flash=True runs there).

    Its head is LayerNorm *after* mean-pooling (`linear_head = LN, Linear`): vitkit's head_norm='pooled'.
    """
    flash_vit = pytest.importorskip("vit_pytorch.simple_flash_attn_vit")
    config = dict(SEED_KW, image_size=(32, 48))
    reference = realistic_(flash_vit.SimpleViT(**config, use_flash=True))
    head_keys = {"linear_head.0.weight": "norm.weight", "linear_head.0.bias": "norm.bias",
                 "linear_head.1.weight": "head.weight", "linear_head.1.bias": "head.bias"}
    state = {head_keys.get(k) or map_key(k): v for k, v in reference.state_dict().items()}
    model = vitkit.SimpleViT(**config, head_norm="pooled").eval()
    model.load_state_dict(state, strict=True)
    x = images(height=32, width=48)
    assert_parity(model, reference, x, model, reference, atol=1e-5)
    tokens_first = vitkit.SimpleViT(**config).eval()
    tokens_first.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert not torch.allclose(tokens_first(x), reference(x), atol=1e-3)


# -- errors, config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"image_size": 30}, "image_size"),
        ({"dim": 30, "heads": 2}, "dim"),
        ({"heads": 0}, "heads"),
        ({"depth": -1}, "depth"),
        ({"mlp_dim": 0}, "mlp_dim"),
        ({"channels": 0}, "channels"),
        ({"attention_type": "fastest"}, "attention backend"),
        ({"num_classes": -2}, "num_classes"),
        ({"dropout": 0.1}, "dropout"),
    ],
)
def test_bad_arguments_are_value_errors(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vitkit.SimpleViT(**{**SEED_KW, **overrides})


@pytest.mark.parametrize(("shape", "match"), [((2, 1, 32, 32), "images must be"), ((2, 3, 64, 64), "images must be")])
def test_wrong_input_is_value_error(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small_simple_vit()(torch.randn(*shape))


def test_config_round_trip_and_rebuild() -> None:
    model = small_simple_vit(image_size=(32, 48), attention_type="scaled_dot_product")
    assert model.config.attention_type == "math"
    again = config_from_dict(model.config.to_dict())
    assert again == model.config and isinstance(again, SimpleViTConfig)
    rebuilt = vitkit.SimpleViT(again)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert "pos_embed" not in model.state_dict()  # fixed sin-cos table, rebuilt not saved


@settings(max_examples=10, deadline=None, database=None)
@given(
    heads=st.integers(1, 3),
    dim_head=st.sampled_from([4, 8]),
    dim=st.sampled_from([8, 16, 32]),
    grid=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    patch=st.sampled_from([2, 4]),
    num_classes=st.integers(0, 4),
    use_flash=st.booleans(),
)
def test_random_small_configs_run(heads: int, dim_head: int, dim: int, grid: tuple[int, int], patch: int,
                                  num_classes: int, use_flash: bool) -> None:
    size = (grid[0] * patch, grid[1] * patch)
    model = vitkit.SimpleViT(image_size=size, patch_size=patch, num_classes=num_classes, dim=dim, depth=1,
                             heads=heads, mlp_dim=2 * dim, dim_head=dim_head, use_flash=use_flash).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, num_classes or dim)
