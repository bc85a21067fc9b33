"""The model registry: names, patterns, meta-device builds, config.json round trips, parameter counts and
state-dict layouts against timm, overrides and errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from torch import nn

import vitkit
from vitkit.models import (
    VisionTransformer,
    ViTConfig,
    build_model,
    config_from_dict,
    get_config,
    model_info,
)

REQUIRED = [
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "vit_large_patch16_224",
    "vit_base_patch32_224",
    "vit_huge_patch14_224",
    "siglip_base_patch16_224",
    "siglip_large_patch16_384",
    "siglip_so400m_patch14_224",
    "siglip_so400m_patch14_384",
    "simple_vit_small_patch16_224",
    "simple_vit_base_patch16_224",
    "vit_digits",
]

# vitkit name -> (timm name, timm kwargs); classifier width stated on both sides.
TIMM_EQUIVALENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit_tiny_patch16_224": ("vit_tiny_patch16_224", {"num_classes": 1000}),
    "vit_small_patch16_224": ("vit_small_patch16_224", {"num_classes": 1000}),
    "vit_base_patch16_224": ("vit_base_patch16_224", {"num_classes": 1000}),
    "vit_base_patch32_224": ("vit_base_patch32_224", {"num_classes": 1000}),
    "vit_large_patch16_224": ("vit_large_patch16_224", {"num_classes": 1000}),
    "vit_huge_patch14_224": ("vit_huge_patch14_224", {"num_classes": 1000}),
    "siglip_base_patch16_224": ("vit_base_patch16_siglip_224", {"num_classes": 0}),
    "siglip_large_patch16_384": ("vit_large_patch16_siglip_384", {"num_classes": 0}),
    "siglip_so400m_patch14_224": ("vit_so400m_patch14_siglip_224", {"num_classes": 0}),
    "siglip_so400m_patch14_384": ("vit_so400m_patch14_siglip_384", {"num_classes": 0}),
}


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def build_on_meta(name: str, **overrides: Any) -> nn.Module:
    with torch.device("meta"):
        return vitkit.create_model(name, **overrides)


# -- names and patterns -------------------------------------------------------------------------


def test_required_models_are_registered() -> None:
    names = vitkit.list_models()
    assert set(REQUIRED) <= set(names)
    assert names == sorted(names) and len(names) == len(set(names))


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("siglip*", {"siglip_base_patch16_224", "siglip_large_patch16_384", "siglip_so400m_patch14_224",
                     "siglip_so400m_patch14_384"}),
        ("simple_vit_*", {"simple_vit_small_patch16_224", "simple_vit_base_patch16_224"}),
        ("*patch32*", {"vit_base_patch32_224"}),
        ("vit_digits", {"vit_digits"}),
        ("no_such_*", set()),
    ],
)
def test_list_models_pattern(pattern: str, expected: set[str]) -> None:
    found = vitkit.list_models(pattern)
    assert expected <= set(found)
    assert all(n in vitkit.list_models() for n in found)
    if pattern in ("*patch32*", "vit_digits", "no_such_*"):
        assert set(found) == expected


def test_list_models_pattern_filters() -> None:
    assert len(vitkit.list_models("siglip*")) < len(vitkit.list_models())
    assert all(n.startswith("siglip") for n in vitkit.list_models("siglip*"))


# -- every registered model ---------------------------------------------------------------------


@pytest.mark.parametrize("name", vitkit.list_models())
def test_every_model_builds_on_meta_and_its_config_round_trips(name: str) -> None:
    model = build_on_meta(name)
    assert all(p.device.type == "meta" for p in model.parameters())
    config = model.config
    assert config == get_config(name)
    again = config_from_dict(json.loads(config.to_json()))
    assert again == config and type(again) is type(config)
    with torch.device("meta"):
        rebuilt = build_model(again)
    assert type(rebuilt) is type(model)
    assert param_count(rebuilt) == param_count(model) == model_info(name).params
    assert shapes(rebuilt) == shapes(model)


@pytest.mark.parametrize("name", list(TIMM_EQUIVALENTS))
def test_registered_vits_have_timm_state_dict_layout(name: str) -> None:
    timm_name, timm_kwargs = TIMM_EQUIVALENTS[name]
    with torch.device("meta"):
        theirs = timm.create_model(timm_name, pretrained=False, **timm_kwargs)
    mine = build_on_meta(name, num_classes=timm_kwargs["num_classes"])
    assert shapes(mine) == shapes(theirs)


def test_siglip_so400m_384_has_428_2m_params_like_timm() -> None:
    mine = build_on_meta("siglip_so400m_patch14_384")
    with torch.device("meta"):
        theirs = timm.create_model("vit_so400m_patch14_siglip_384", pretrained=False, num_classes=0)
    assert param_count(mine) == param_count(theirs)
    assert round(param_count(mine) / 1e6, 1) == 428.2
    assert mine.patch_embed.grid_size == (27, 27)  # 384 px / 14 px patches, remainder cropped as timm does


@pytest.mark.parametrize(
    ("name", "img_size", "pool"),
    [
        ("vit_base_patch16_224", (224, 224), "token"),
        ("siglip_large_patch16_384", (384, 384), "map"),
        ("simple_vit_small_patch16_224", (224, 224), "avg"),
        ("vit_digits", (8, 8), "avg"),
    ],
)
def test_model_info(name: str, img_size: tuple[int, int], pool: str) -> None:
    info = model_info(name)
    assert (info.name, info.img_size, info.global_pool) == (name, img_size, pool)
    assert info.params == param_count(build_on_meta(name))


def test_siglip_configs_are_timms_siglip() -> None:
    """timm's SigLIP ports: exact GELU, eps 1e-6, MAP head, no class token (numbers: test_registry_parity.py); the
    SigLIP2 NaFlex towers (`siglip2_*`) are transformers' and run GELU-tanh (test_naflex.py)."""
    for name in vitkit.list_models("siglip_*"):
        config = get_config(name)
        assert isinstance(config, ViTConfig)
        assert (config.class_token, config.global_pool, config.act_layer, config.norm_eps, config.num_classes) == (
            False, "map", "gelu", 1e-6, 0
        )


# -- create_model -------------------------------------------------------------------------------


def test_create_model_overrides() -> None:
    model = vitkit.create_model("vit_digits", num_classes=3, depth=2)
    assert isinstance(model, VisionTransformer)
    assert model.config.num_classes == 3 and len(model.blocks) == 2
    assert get_config("vit_digits").num_classes == 10  # the registry entry is untouched
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_create_model_with_pretrained_weights(tmp_path: Path) -> None:
    """`vitkit.create_model(name, pretrained=PATH)` builds the named model and loads the checkpoint into it."""
    saved = vitkit.create_model("vit_digits", depth=2)
    vitkit.save_pretrained(saved, tmp_path / "digits")
    model = vitkit.create_model("vit_digits", depth=2, pretrained=tmp_path / "digits")
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values(),
                                                 strict=True))
    with pytest.raises(ValueError, match="do not fit the model"):
        vitkit.create_model("vit_digits", depth=3, pretrained=tmp_path / "digits")


def test_create_model_num_classes_10_on_a_big_model() -> None:
    model = build_on_meta("vit_base_patch16_224", num_classes=10)
    assert model.head.out_features == 10


def test_create_simple_vit() -> None:
    """A registered SimpleViT is vit-pytorch's (LayerNorm on the tokens before the mean): a VisionTransformer
    configuration (numbers: test_registry_parity.py)."""
    model = vitkit.create_model("simple_vit_small_patch16_224", depth=1, num_classes=4)
    assert isinstance(model, VisionTransformer) and model.config == vitkit.SimpleViT(
        224, 16, 4, dim=384, depth=1, heads=6, mlp_dim=1536, head_norm="tokens").config
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 4)


def test_vit_digits_trains_one_step() -> None:
    torch.manual_seed(0)
    model = vitkit.create_model("vit_digits")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    losses = []
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_unknown_model_is_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="vit_gigantic_patch1_9000"):
        vitkit.create_model("vit_gigantic_patch1_9000")
    with pytest.raises(ValueError, match="nope"):
        model_info("nope")


def test_unknown_override_is_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="dropout_rate"):
        vitkit.create_model("vit_digits", dropout_rate=0.1)


def test_build_model_from_dict_and_bad_family() -> None:
    data = get_config("vit_digits").to_dict()
    assert build_model(data).config == get_config("vit_digits")
    with pytest.raises(ValueError, match="family"):
        build_model({**data, "family": "resnet"})
    with pytest.raises(ValueError, match="warp_factor"):
        build_model({**data, "warp_factor": 9})
