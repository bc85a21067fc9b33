"""Config fuzzing: every valid configuration builds and runs a forward pass of the right shape; every invalid one
raises ValueError naming the field — never an obscure error from deep inside torch."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vitkit.layers import ACTIVATIONS
from vitkit.models import SimpleViT, VisionTransformer, ViTConfig, build_model
from vitkit.models.config import POS_EMBEDS

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
POOLS = ("", "token", "avg", "max", "avgmax", "map")
CPU_BACKENDS = ("auto", "math", "sdpa", "sdpa:math", "scaled_dot_product")


@st.composite
def valid_vit(draw: st.DrawFn) -> dict[str, Any]:
    """Small, valid ViTConfig keyword sets spanning every structural option."""
    patch = draw(st.integers(2, 8))
    grid = (draw(st.integers(1, max(1, 32 // patch))), draw(st.integers(1, max(1, 32 // patch))))
    heads = draw(st.sampled_from((1, 2, 4)))
    embed_dim = heads * draw(st.sampled_from((4, 8)))  # a multiple of 4: sin-cos positions need it
    depth = draw(st.integers(1, 2))
    pool = draw(st.sampled_from(POOLS))
    cfg: dict[str, Any] = dict(
        img_size=(grid[0] * patch, grid[1] * patch), patch_size=patch, embed_dim=embed_dim, depth=depth,
        num_heads=heads, global_pool=pool, in_chans=draw(st.integers(1, 3)), num_classes=draw(st.integers(0, 5)),
        head_dim=draw(st.sampled_from((None, 4, 8))),
        class_token=pool == "token" or draw(st.booleans()), reg_tokens=draw(st.integers(0, 2)),
        no_embed_class=draw(st.booleans()), pos_embed=draw(st.sampled_from(POS_EMBEDS)),
        qk_norm=draw(st.booleans()), init_values=draw(st.sampled_from((None, 1e-5, 0.1, 1.0))),
        mlp_layer=draw(st.sampled_from(("mlp", "swiglu", "swiglu_packed"))),
        mlp_ratio=draw(st.sampled_from((0.5, 1.0, 2.0, 4.0))), mlp_hidden_dim=draw(st.sampled_from((None, 6, 10))),
        act_layer=draw(st.sampled_from(tuple(ACTIVATIONS))),
        norm_layer=draw(st.sampled_from(("layernorm", "rmsnorm"))), pre_norm=draw(st.booleans()),
        fc_norm=draw(st.sampled_from((None, True, False))), norm_pre=draw(st.booleans()),
        final_norm=draw(st.booleans()), qkv_bias=draw(st.booleans()), proj_bias=draw(st.booleans()),
        patch_bias=draw(st.sampled_from((None, True, False))),
        patch_embed=draw(st.sampled_from(("conv", "norm_linear_norm"))), dynamic_img_size=draw(st.booleans()),
        select_layer=draw(st.sampled_from((-1, 1) if depth == 1 else (-1, -2, 1))),
        ignore_head=draw(st.booleans()),
        drop_rate=draw(st.sampled_from((0.0, 0.1))), drop_path_rate=draw(st.sampled_from((0.0, 0.2))),
        weight_init=draw(st.sampled_from(("", "jax"))), check_finite=draw(st.booleans()),
    )
    if draw(st.booleans()):  # an image size the patch does not divide, padded or cropped
        cfg["img_size"] = (cfg["img_size"][0] + draw(st.integers(1, patch - 1)), cfg["img_size"][1])
        cfg[draw(st.sampled_from(("dynamic_img_pad", "crop_remainder")))] = True
    return cfg


def expected_shape(cfg: ViTConfig, batch: int) -> tuple[int, ...]:
    grid = [(i + p - 1) // p if cfg.dynamic_img_pad else i // p for i, p in zip(cfg.img_size, cfg.patch_size,
                                                                                   strict=True)]
    tokens = cfg.num_prefix_tokens + grid[0] * grid[1]
    if cfg.ignore_head:
        return (batch, tokens, cfg.embed_dim)
    pooled = (batch, tokens) if cfg.global_pool == "" else (batch,)
    return (*pooled, cfg.num_classes or cfg.embed_dim)


@FUZZ
@given(kwargs=valid_vit(), attention=st.sampled_from(CPU_BACKENDS))
def test_every_valid_vit_config_builds_and_runs(kwargs: dict[str, Any], attention: str) -> None:
    cfg = ViTConfig(**kwargs)
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg  # and round-trips through config.json
    torch.manual_seed(0)
    model = VisionTransformer(cfg, attention_type=attention).eval()
    x = torch.randn(2, cfg.in_chans, *cfg.img_size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == expected_shape(cfg, 2)
    assert torch.isfinite(out).all()


@st.composite
def valid_simple_vit(draw: st.DrawFn) -> dict[str, Any]:
    patch = draw(st.integers(2, 8))
    return dict(
        image_size=(patch * draw(st.integers(1, 4)), patch * draw(st.integers(1, 4))), patch_size=patch,
        dim=4 * draw(st.integers(1, 8)), depth=draw(st.integers(1, 2)), heads=draw(st.integers(1, 4)),
        mlp_dim=draw(st.integers(1, 64)), channels=draw(st.integers(1, 3)), dim_head=draw(st.integers(1, 16)),
        num_classes=draw(st.integers(0, 5)), use_flash=draw(st.booleans()),
        attention_type=draw(st.sampled_from((None, *CPU_BACKENDS))),
        head_norm=draw(st.sampled_from(("tokens", "pooled"))), check_finite=draw(st.booleans()),
    )


@FUZZ
@given(valid_simple_vit())
def test_every_valid_simple_vit_config_builds_and_runs(kwargs: dict[str, Any]) -> None:
    model = SimpleViT(**kwargs).eval()
    cfg = model.config
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg
    assert model.blocks[0].mlp.fc1.out_features == kwargs["mlp_dim"]
    with torch.no_grad():
        out = model(torch.randn(2, kwargs["channels"], *kwargs["image_size"]))
    assert out.shape == (2, kwargs["num_classes"] or kwargs["dim"]) and torch.isfinite(out).all()


# --- invalid configurations -----------------------------------------------------------------------

WRONG_TYPES = {  # a value of a type the field never takes
    "int": st.one_of(st.text(max_size=3), st.booleans(), st.floats(0.5, 3.5).filter(lambda f: not f.is_integer())),
    "float": st.one_of(st.text(max_size=3), st.booleans(), st.just(float("nan")), st.just(float("inf"))),
    "bool": st.one_of(st.integers(0, 1), st.text(max_size=3), st.just([True])),
    "str": st.one_of(st.integers(), st.booleans(), st.just(["avg"])),
}
UNKNOWN_NAMES = ("global_pool", "pos_embed", "act_layer", "norm_layer", "mlp_layer", "weight_init", "patch_embed")


@st.composite
def broken_vit(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid config with one thing made wrong, and the field the error must name."""
    cfg = draw(valid_vit())
    kind = draw(st.sampled_from(("type", "name", "range", "heads", "patch", "token", "sincos", "select")))
    if kind == "type":
        field = draw(st.sampled_from([f for f in fields(ViTConfig) if f.type in WRONG_TYPES]))
        cfg[field.name] = draw(WRONG_TYPES[field.type])
        return cfg, field.name
    if kind == "name":
        field = draw(st.sampled_from(UNKNOWN_NAMES))
        cfg[field] = draw(st.sampled_from(("mean", "rope", "bogus", "GELU", "flash2", " avg")))
        return cfg, field
    if kind == "range":
        field, value = draw(st.sampled_from([
            ("depth", 0), ("depth", -1), ("embed_dim", 0), ("num_heads", -2), ("in_chans", 0), ("num_classes", -1),
            ("patch_size", 0), ("img_size", (0, 16)), ("img_size", (16, 16, 3)), ("reg_tokens", -1),
            ("drop_rate", 1.0), ("attn_drop_rate", -0.1), ("drop_path_rate", 2.0), ("mlp_ratio", 0.0),
            ("mlp_ratio", -1.0), ("mlp_hidden_dim", 0), ("init_values", 0.0), ("norm_eps", 0.0),
            ("num_recomputing_layers", -1), ("head_dim", 0), ("mean", ()), ("std", (0.5, 0.0, 0.5)), ("mean", ("a",)),
        ]))
        cfg[field] = value
        return cfg, field
    if kind == "heads":
        cfg.update(num_heads=draw(st.sampled_from((3, 5))), embed_dim=8, head_dim=None)
        return cfg, "num_heads"
    if kind == "patch":
        cfg.update(img_size=(17, 16), patch_size=4, dynamic_img_pad=False, crop_remainder=False)
        return cfg, "patch_size"
    if kind == "token":
        cfg.update(global_pool="token", class_token=False)
        return cfg, "class_token"
    if kind == "sincos":
        cfg.update(pos_embed="sincos", embed_dim=6, num_heads=1, head_dim=None, mlp_layer="mlp")
        return cfg, "embed_dim"
    cfg.update(select_layer=draw(st.sampled_from((0, -cfg["depth"] - 1))))
    return cfg, "select_layer"


@FUZZ
@given(broken_vit())
def test_every_invalid_vit_config_is_a_value_error_naming_the_field(case: tuple[dict[str, Any], str]) -> None:
    kwargs, field = case
    with pytest.raises(ValueError) as err:
        build_model(ViTConfig(**kwargs))
    assert field in str(err.value)


ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True, allow_infinity=True),
                      st.text(max_size=6), st.lists(st.integers(-2, 40), max_size=3))


SIMPLE_VIT_ARGS = ("image_size", "patch_size", "num_classes", "dim", "depth", "heads", "mlp_dim", "channels",
                   "dim_head", "use_flash", "attention_type", "head_norm", "check_finite", "mean", "std")


@FUZZ
@given(st.dictionaries(st.sampled_from([f.name for f in fields(ViTConfig)]), ANY_VALUE, max_size=4),
       st.dictionaries(st.sampled_from(SIMPLE_VIT_ARGS), ANY_VALUE, max_size=4))
def test_arbitrary_values_build_or_raise_value_error(vit: dict[str, Any], simple: dict[str, Any]) -> None:
    """Whatever lands in a config (a hand-edited config.json, a typo, SimpleViT's arguments), the answer is a model
    or a ValueError."""
    small_vit = dict(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2) | vit
    small_simple = dict(image_size=16, patch_size=4, num_classes=3, dim=16, depth=1, heads=2, mlp_dim=16,
                        dim_head=8) | simple
    for make, kwargs in ((ViTConfig.from_dict, small_vit), (lambda kw: SimpleViT(**kw).config, small_simple)):
        try:
            cfg = make(kwargs)
        except ValueError:
            continue
        if math.prod(cfg.img_size) * cfg.num_blocks > 64 * 64 * 4:
            continue  # valid but too big to run here
        model = build_model(cfg).eval()
        with torch.no_grad():
            model(torch.rand(1, cfg.in_chans, *cfg.img_size))
