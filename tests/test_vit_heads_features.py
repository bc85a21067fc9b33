"""VisionTransformer heads and features: pooling, classifier head, forward_intermediates, select_layer."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import vitkit
from test_vision_transformer import assert_close, count_block_calls, images, randomize_, small_vit

# -- pooling and heads --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("global_pool", "extra", "expected_shape"),
    [
        ("", {}, (2, 17, 10)),
        ("token", {}, (2, 10)),
        ("avg", {}, (2, 10)),
        ("max", {}, (2, 10)),
        ("avgmax", {}, (2, 10)),
        ("map", {"class_token": False}, (2, 10)),
        ("map", {}, (2, 10)),
    ],
)
def test_global_pool_output_shapes(global_pool: str, extra: dict[str, Any], expected_shape: tuple[int, ...]) -> None:
    model = small_vit(global_pool=global_pool, **extra).eval()
    x = images()
    with torch.no_grad():
        assert model(x).shape == expected_shape
        features = model.forward_features(x)
        assert features.shape == (2, 16 + model.num_prefix_tokens, 64)
        pre_logits = model.forward_head(features, pre_logits=True)
    assert pre_logits.shape == (*expected_shape[:-1], 64)


@pytest.mark.parametrize(
    ("global_pool", "reduce"),
    [("avg", lambda t: t.mean(1)), ("max", lambda t: t.amax(1)), ("avgmax", lambda t: (t.mean(1) + t.amax(1)) / 2)],
)
def test_avg_and_max_pool_reduce_patch_tokens_then_fc_norm(global_pool: str, reduce: Any) -> None:
    model = randomize_(small_vit(global_pool=global_pool, reg_tokens=2)).eval()
    assert isinstance(model.norm, nn.Identity) and isinstance(model.fc_norm, nn.LayerNorm)  # timm's fc_norm rule
    x = images()
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.fc_norm(reduce(features[:, 3:]))  # 1 class + 2 register tokens excluded
        assert_close(model.forward_head(features, pre_logits=True), pooled)
        assert_close(model(x), model.head(pooled))


def test_token_pool_takes_class_token_after_final_norm() -> None:
    model = randomize_(small_vit()).eval()
    x = images()
    with torch.no_grad():
        features = model.forward_features(x)
        assert_close(model.forward_head(features, pre_logits=True), features[:, 0])
        assert_close(model(x), model.head(features[:, 0]))


def test_map_pool_attends_over_patch_tokens_only() -> None:
    model = randomize_(small_vit(global_pool="map", class_token=False, reg_tokens=2)).eval()
    x = images()
    with torch.no_grad():
        features = model.forward_features(x)
        assert_close(model.forward_head(features, pre_logits=True), model.attn_pool(features[:, 2:]))


def test_fc_norm_false_keeps_final_norm_for_avg() -> None:
    model = small_vit(global_pool="avg", fc_norm=False)
    assert isinstance(model.norm, nn.LayerNorm) and isinstance(model.fc_norm, nn.Identity)


def test_ignore_head_returns_tokens() -> None:
    model = randomize_(small_vit(ignore_head=True)).eval()
    x = images()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 17, 64)
        assert_close(out, model.forward_features(x))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, {"pos_embed", "cls_token"}),
        ({"class_token": False, "reg_tokens": 2, "global_pool": "map"}, {"pos_embed", "reg_token", "attn_pool.latent"}),
        ({"pos_embed": "sincos"}, {"cls_token"}),
        ({"pos_embed": "none", "class_token": False, "global_pool": "avg"}, set()),
    ],
)
def test_no_weight_decay(overrides: dict[str, Any], expected: set[str]) -> None:
    model = small_vit(**overrides)
    names = model.no_weight_decay()
    assert names == expected
    assert names <= dict(model.named_parameters()).keys()


def test_reset_classifier() -> None:
    model = small_vit()
    model.reset_classifier(3)
    assert model(images()).shape == (2, 3) and model.config.num_classes == 3
    model.reset_classifier(0)
    assert model(images()).shape == (2, 64)


# -- feature extraction -------------------------------------------------------------------------


def manual_block_outputs(model: vitkit.VisionTransformer, x: torch.Tensor) -> list[torch.Tensor]:
    tokens, outs = model.embed(x), []
    for block in model.blocks:
        tokens = block(tokens)
        outs.append(tokens)
    return outs


@pytest.mark.parametrize(
    ("indices", "expected_blocks"), [(1, [3]), (2, [2, 3]), ([0, 2], [0, 2]), ([-1, 0], [0, 3]), (None, [0, 1, 2, 3])]
)
def test_forward_intermediates_indices_and_shapes(indices: Any, expected_blocks: list[int]) -> None:
    model = randomize_(small_vit(depth=4, img_size=(32, 48), reg_tokens=1)).eval()
    x = images(height=32, width=48)
    with torch.no_grad():
        raw = manual_block_outputs(model, x)
        nchw = model.forward_intermediates(x, indices=indices, intermediates_only=True)
        nlc = model.forward_intermediates(x, indices=indices, output_fmt="NLC", intermediates_only=True)
    assert len(nchw) == len(nlc) == len(expected_blocks)
    for i, a, b in zip(expected_blocks, nchw, nlc, strict=True):
        assert a.shape == (2, 64, 4, 6)
        assert b.shape == (2, 24, 64)
        assert_close(b, raw[i][:, 2:])
        assert_close(a, raw[i][:, 2:].reshape(2, 4, 6, 64).permute(0, 3, 1, 2))


def test_forward_intermediates_prefix_tokens_norm_and_final_output() -> None:
    model = randomize_(small_vit(depth=3, reg_tokens=2)).eval()
    x = images()
    with torch.no_grad():
        raw = manual_block_outputs(model, x)
        final, inter = model.forward_intermediates(x, indices=[1, 2], norm=True, return_prefix_tokens=True,
                                                   output_fmt="NLC")
        features = model.forward_features(x)
    assert_close(final, features)
    for i, (spatial, prefix) in zip([1, 2], inter, strict=True):
        assert prefix.shape == (2, 3, 64) and spatial.shape == (2, 16, 64)
        assert_close(torch.cat([prefix, spatial], 1), model.norm(raw[i]))
    last = torch.cat([inter[-1][1], inter[-1][0]], 1)
    assert_close(last, features)  # the last block with norm=True is forward_features


def test_forward_intermediates_without_norm_are_raw_block_outputs() -> None:
    model = randomize_(small_vit(depth=2)).eval()
    x = images()
    with torch.no_grad():
        raw = manual_block_outputs(model, x)
        out = model.forward_intermediates(x, indices=[1], output_fmt="NLC", return_prefix_tokens=True,
                                          intermediates_only=True)
    spatial, prefix = out[0]
    assert_close(torch.cat([prefix, spatial], 1), raw[1])
    assert (spatial - model.norm(raw[1])[:, 1:]).abs().max() > 1e-3


def test_forward_intermediates_stop_early_runs_fewer_blocks() -> None:
    model = small_vit(depth=4)
    with count_block_calls(model) as counts, torch.no_grad():
        model.forward_intermediates(images(), indices=[1], intermediates_only=True)
    assert counts == [1, 1, 0, 0]


def test_forward_intermediates_dynamic_size_grid() -> None:
    model = small_vit(dynamic_img_size=True)
    with torch.no_grad():
        out = model.forward_intermediates(images(height=48, width=24), indices=1, intermediates_only=True)
    assert out[0].shape == (2, 64, 6, 3)


@pytest.mark.parametrize(("kwargs", "match"), [({"indices": 3}, "indices"), ({"indices": [5]}, "out of range"),
                                               ({"output_fmt": "NHWC"}, "output_fmt")])
def test_forward_intermediates_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small_vit(depth=2).forward_intermediates(images(), **kwargs)


@pytest.mark.parametrize(("select_layer", "num_blocks"), [(-1, 4), (-2, 3), (-4, 1), (3, 3), (1, 1)])
def test_select_layer_keeps_deepseek_vl2_block_count(select_layer: int, num_blocks: int) -> None:
    model = small_vit(depth=4, select_layer=select_layer)
    assert len(model.blocks) == num_blocks == model.config.num_blocks


def test_select_layer_still_applies_final_norm() -> None:
    full = randomize_(small_vit(depth=4)).eval()
    cut = small_vit(depth=4, select_layer=-2).eval()
    state = {k: v for k, v in full.state_dict().items() if not k.startswith("blocks.3.")}
    cut.load_state_dict(state, strict=True)
    x = images()
    with torch.no_grad():
        (spatial, prefix), = full.forward_intermediates(x, indices=[2], norm=True, return_prefix_tokens=True,
                                                        output_fmt="NLC", intermediates_only=True)
        assert_close(cut.forward_features(x), torch.cat([prefix, spatial], 1))
        raw = manual_block_outputs(full, x)[2]
        assert (cut.forward_features(x) - raw).abs().max() > 1e-3  # not HF's un-normed hidden_states[-2]
