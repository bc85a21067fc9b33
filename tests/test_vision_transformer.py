"""VisionTransformer: timm parity, seed 000 semantics (pre/post-norm, recomputation, qkv_bias, attention
backends), configuration errors, and a property test over small configs. Heads and features: test_vit_heads_features."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import timm
import timm.layers
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import nn

import vitkit
from interop_helpers import assert_parity, images, realistic_
from vitkit.attention import BackendUnavailableError
from vitkit.models import ViTConfig, build_model, config_from_dict

SMALL: dict[str, Any] = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)
CPU_BACKENDS = ["math", "sdpa", "auto", "scaled_dot_product", "torch", "sdpa:math", "sdpa:flash"]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=atol)


def small_vit(**overrides: Any) -> vitkit.VisionTransformer:
    torch.manual_seed(0)
    return vitkit.VisionTransformer(**{**SMALL, **overrides})


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial values everywhere (zero-initialised tokens, unit norms) so a mix-up changes outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            offset = 1.0 if name.endswith("weight") and p.dim() == 1 else 0.0
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + offset)
    return module


@contextmanager
def count_block_calls(model: nn.Module) -> Iterator[list[int]]:
    """Count forward calls per block. Pre-hooks: non-reentrant checkpointing stops a recomputation
    early, so the forward *post*-hook never fires on the recompute."""
    counts = [0] * len(model.blocks)

    def hook(index: int, *_: Any) -> None:
        counts[index] += 1

    handles = [b.register_forward_pre_hook(functools.partial(hook, i)) for i, b in enumerate(model.blocks)]
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


# -- timm parity --------------------------------------------------------------------------------


def forward_with_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(model(x), model.forward_features(x)) from one pass: both forward_features end with `norm`."""
    captured: list[torch.Tensor] = []
    handle = model.norm.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        handle.remove()
    assert len(captured) == 1
    return out, captured[0]


def load_and_compare(theirs: nn.Module, mine: vitkit.VisionTransformer, x: torch.Tensor) -> None:
    """timm's weights (at realistic magnitudes) into vitkit: same features and outputs, fp32 and float64."""
    realistic_(theirs)
    mine.eval().load_state_dict(theirs.state_dict(), strict=True)
    out_theirs, features_theirs = forward_with_features(theirs, x)
    out_mine, features_mine = forward_with_features(mine, x)
    assert_close(features_mine, features_theirs)
    assert_close(out_mine, out_theirs)
    assert_parity(mine, theirs, x, mine, theirs)


# timm's VisionTransformer normalises with LayerNorm eps 1e-6; vitkit's constructor keeps seed 000's 1e-5.
TIMM_EPS = {"norm_eps": 1e-6}
GELU_TANH = functools.partial(nn.GELU, approximate="tanh")
# (timm VisionTransformer kwargs, the vitkit kwargs that differ)
PARITY_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}),
    "no_qkv_bias": ({"qkv_bias": False}, {}),
    "reg_tokens_no_embed_class_layerscale": ({"reg_tokens": 2, "no_embed_class": True, "init_values": 0.1}, {}),
    "qk_norm": ({"qk_norm": True}, {}),
    "avg_fc_norm": ({"global_pool": "avg"}, {}),
    "max": ({"global_pool": "max"}, {}),
    "avg_no_class_token": ({"global_pool": "avg", "class_token": False}, {}),
    "all_tokens": ({"global_pool": ""}, {}),
    "map_with_class_token": ({"global_pool": "map"}, {}),
    "map_reg4_no_class_token": ({"global_pool": "map", "class_token": False, "reg_tokens": 4}, {}),
    "clip_norm_pre": ({"pre_norm": True}, {"norm_pre": True}),
    "swiglu_packed": (
        {"mlp_layer": timm.layers.SwiGLUPacked, "act_layer": nn.SiLU},
        {"mlp_layer": "swiglu_packed", "act_layer": "silu"},
    ),
    "gelu_tanh": ({"act_layer": GELU_TANH}, {"act_layer": "gelu_tanh"}),
    "no_pos_embed": ({"pos_embed": "none"}, {"pos_embed": "none"}),
    "no_classifier": ({"num_classes": 0}, {}),
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_timm_parity_small_configs(case: str) -> None:
    timm_kwargs, vitkit_kwargs = PARITY_CASES[case]
    torch.manual_seed(0)
    theirs = TimmViT(**{**SMALL, **timm_kwargs})
    shared = {k: v for k, v in timm_kwargs.items() if k not in ("pre_norm", "mlp_layer", "act_layer")}
    mine = vitkit.VisionTransformer(**{**SMALL, **shared, **vitkit_kwargs}, **TIMM_EPS, weight_init="skip")
    load_and_compare(theirs, mine, images())


def test_timm_parity_dynamic_img_size_non_native_non_square() -> None:
    kwargs = dict(img_size=224, patch_size=16, embed_dim=64, depth=2, num_heads=4, num_classes=10,
                  dynamic_img_size=True)
    torch.manual_seed(0)
    theirs = TimmViT(**kwargs)
    mine = vitkit.VisionTransformer(**kwargs, **TIMM_EPS, weight_init="skip")
    load_and_compare(theirs, mine, images(height=160, width=224))


def test_timm_parity_dynamic_img_size_with_reg_tokens_no_embed_class() -> None:
    kwargs = dict(img_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10,
                  dynamic_img_size=True, reg_tokens=3, no_embed_class=True)
    torch.manual_seed(0)
    theirs = TimmViT(**kwargs)
    mine = vitkit.VisionTransformer(**kwargs, **TIMM_EPS, weight_init="skip")
    load_and_compare(theirs, mine, images(height=48, width=72))


@pytest.mark.slow
def test_timm_parity_vit_base_patch16_224() -> None:
    theirs = timm.create_model("vit_base_patch16_224", pretrained=False)
    mine = vitkit.create_model("vit_base_patch16_224", weight_init="skip")
    assert mine.head.out_features == 1000
    load_and_compare(theirs, mine, images(height=224, width=224))


@pytest.mark.parametrize("output_fmt", ["NCHW", "NLC"])
def test_forward_intermediates_match_timm(output_fmt: str) -> None:
    kwargs = dict(SMALL, depth=3, reg_tokens=2, img_size=(32, 48))
    torch.manual_seed(0)
    theirs = realistic_(TimmViT(**kwargs))
    mine = vitkit.VisionTransformer(**kwargs, **TIMM_EPS, weight_init="skip").eval()
    mine.load_state_dict(theirs.state_dict())
    x = images(height=32, width=48)
    call = dict(indices=[0, 2], return_prefix_tokens=True, norm=True, output_fmt=output_fmt)
    with torch.no_grad():
        final_t, inter_t = theirs.forward_intermediates(x, **call)
        final_m, inter_m = mine.forward_intermediates(x, **call)
    assert_close(final_m, final_t)
    assert len(inter_m) == len(inter_t) == 2
    for (spatial_m, prefix_m), (spatial_t, prefix_t) in zip(inter_m, inter_t, strict=True):
        assert_close(spatial_m, spatial_t)
        assert_close(prefix_m, prefix_t)


# -- pre_norm, qkv_bias, weight_init ------------------------------------------------------------


def test_pre_norm_false_builds_post_norm_blocks_with_different_output() -> None:
    pre = randomize_(small_vit(pre_norm=True)).eval()
    post = small_vit(pre_norm=False).eval()
    post.load_state_dict(pre.state_dict())
    assert all(b.pre_norm for b in pre.blocks) and not any(b.pre_norm for b in post.blocks)
    x = images()
    with torch.no_grad():
        assert (pre(x) - post(x)).abs().max() > 1e-3
        tokens = post.embed(x)
        for block in post.blocks:  # post-norm: x = norm1(x + attn(x)); x = norm2(x + mlp(x))
            tokens = block.norm1(tokens + block.attn(tokens))
            tokens = block.norm2(tokens + block.mlp(tokens))
        assert_close(post.forward_features(x), post.norm(tokens))


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_qkv_bias_is_honoured(qkv_bias: bool) -> None:
    model = small_vit(qkv_bias=qkv_bias)
    for block in model.blocks:
        assert (block.attn.qkv.bias is not None) == qkv_bias
    assert ("blocks.0.attn.qkv.bias" in model.state_dict()) == qkv_bias


@pytest.mark.parametrize("weight_init", ["", "jax", "skip"])
def test_weight_init_modes_build_and_run(weight_init: str) -> None:
    model = small_vit(weight_init=weight_init).eval()
    with torch.no_grad():
        out = model(images())
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    head_is_zero = bool((model.head.weight == 0).all() and (model.head.bias == 0).all())
    assert head_is_zero == (weight_init == "jax")
    if weight_init == "jax":
        assert torch.equal(out, torch.zeros(2, 10))
        assert model.blocks[0].attn.qkv.weight.abs().sum() > 0
    if weight_init == "skip":
        assert torch.equal(model.pos_embed, torch.zeros_like(model.pos_embed))  # left as allocated
    else:
        assert 0.01 < model.pos_embed.std().item() < 0.03  # trunc_normal(std=0.02)


def test_weight_init_invalid_is_value_error() -> None:
    with pytest.raises(ValueError, match="weight_init"):
        small_vit(weight_init="xavier")


def test_layer_scale_init_values() -> None:
    model = small_vit(init_values=1e-3)
    assert torch.equal(model.blocks[1].ls2.gamma, torch.full((64,), 1e-3))
    assert isinstance(small_vit().blocks[0].ls1, nn.Identity)


# -- gradient checkpointing of the first N blocks -----------------------------------------------


def training_step(model: vitkit.VisionTransformer, x: torch.Tensor, seed: int = 123) -> torch.Tensor:
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # same dropout / drop-path masks for every model
    loss = model(x).logsumexp(-1).mean()
    loss.backward()
    return loss.detach()


RECOMPUTE_KW: dict[str, Any] = dict(SMALL, depth=4, drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.3)


@pytest.mark.parametrize("k", [0, 2, 4])
def test_num_recomputing_layers_recomputes_exactly_first_k_blocks(k: int) -> None:
    torch.manual_seed(0)
    reference = vitkit.VisionTransformer(**RECOMPUTE_KW)
    model = vitkit.VisionTransformer(**RECOMPUTE_KW, num_recomputing_layers=k)
    model.load_state_dict(reference.state_dict())
    assert model.num_recomputing_layers == k
    x = images()
    ref_loss = training_step(reference, x)
    with count_block_calls(model) as counts:
        loss = training_step(model, x)
    assert counts == [2 if i < k else 1 for i in range(4)]
    # checkpointing preserves the RNG state: same dropout masks, same loss, same gradients
    assert_close(loss, ref_loss, atol=1e-6)
    ref_grads = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert_close(p.grad, ref_grads[name].grad, atol=1e-6)


def test_recomputation_is_skipped_without_grad() -> None:
    model = small_vit(num_recomputing_layers=2)
    with count_block_calls(model) as counts, torch.no_grad():
        model(images())
    assert counts == [1, 1]


@pytest.mark.parametrize(("enable", "expected"), [(True, 4), (False, 0), (1, 1), (3, 3)])
def test_set_grad_checkpointing(enable: bool | int, expected: int) -> None:
    model = small_vit(depth=4, num_recomputing_layers=2)
    model.set_grad_checkpointing(enable)
    assert model.num_recomputing_layers == expected
    assert model.config.num_recomputing_layers == expected
    with count_block_calls(model) as counts:
        training_step(model, images())
    assert counts == [2 if i < expected else 1 for i in range(4)]


def test_grad_checkpointing_counts_are_clamped_to_the_blocks_built() -> None:
    model = small_vit(depth=2)
    model.set_grad_checkpointing(3)
    assert model.num_recomputing_layers == 2
    with pytest.raises(ValueError, match="grad checkpointing"):
        model.set_grad_checkpointing(-1)
    assert small_vit(depth=4, select_layer=2, num_recomputing_layers=4).num_recomputing_layers == 2


# -- attention backends, dropout, compile -------------------------------------------------------


def outputs_for_backend(attention_type: str, reference: vitkit.VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    model = vitkit.VisionTransformer(reference.config, attention_type=attention_type).eval()
    model.load_state_dict(reference.state_dict())
    return model(x)


@pytest.mark.parametrize("attention_type", CPU_BACKENDS)
@pytest.mark.parametrize("global_pool", ["token", "map"])
def test_every_cpu_backend_gives_the_same_output(attention_type: str, global_pool: str) -> None:
    reference = randomize_(small_vit(attention_type="math", global_pool=global_pool)).eval()
    x = images()
    with torch.no_grad():
        assert_close(outputs_for_backend(attention_type, reference, x), reference(x))


def test_backends_agree_on_gradients() -> None:
    reference = randomize_(small_vit(attention_type="math"))
    x = images()
    training_step(reference, x)
    other = vitkit.VisionTransformer(reference.config, attention_type="sdpa")
    other.load_state_dict(reference.state_dict())
    training_step(other, x)
    for p, q in zip(reference.parameters(), other.parameters(), strict=True):
        assert_close(q.grad, p.grad, atol=1e-5)


@pytest.mark.slow
def test_flex_backend_matches_under_no_grad() -> None:
    reference = randomize_(small_vit(attention_type="math")).eval()
    x = images()
    with torch.no_grad():
        assert_close(outputs_for_backend("flex", reference, x), reference(x))


@pytest.mark.parametrize("attention_type", ["flash", "flash_attention", "xformers"])
def test_gpu_only_backends_raise_at_forward_on_cpu(attention_type: str) -> None:
    model = small_vit(attention_type=attention_type)  # building never needs the kernel
    with pytest.raises(BackendUnavailableError):
        model(images())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("attention_type", ["sdpa", "flash", "xformers", "flex", "auto"])
def test_cuda_backends_match_math_in_half_precision(attention_type: str) -> None:
    reference = randomize_(small_vit(attention_type="math")).cuda().half().eval()
    model = vitkit.VisionTransformer(reference.config, attention_type=attention_type).cuda().half().eval()
    model.load_state_dict(reference.state_dict())
    x = images().cuda().half()
    with torch.no_grad():
        try:
            out = model(x)
        except BackendUnavailableError as err:
            pytest.skip(str(err))
        assert_close(out.float(), reference(x).float(), atol=2e-2)


def test_dropout_and_stochastic_depth_only_in_training() -> None:
    model = small_vit(drop_rate=0.2, attn_drop_rate=0.2, drop_path_rate=0.3, head_drop_rate=0.2)
    x = images()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.allclose(model(x), model(x))


def test_drop_path_schedule_is_linear() -> None:
    model = small_vit(depth=4, drop_path_rate=0.3)
    probs = [getattr(b.drop_path1, "drop_prob", 0.0) for b in model.blocks]
    assert probs == pytest.approx([0.0, 0.1, 0.2, 0.3])


@pytest.mark.slow
def test_torch_compile_matches_eager() -> None:
    model = randomize_(small_vit(embed_dim=64, depth=2, img_size=32, patch_size=8)).eval()
    x = images()
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    assert_close(compiled, eager)


# -- seed 000 demo ------------------------------------------------------------------------------


def test_seed_000_vision_transformer_demo() -> None:
    model = vitkit.VisionTransformer(img_size=224, patch_size=16, embed_dim=384, depth=6, num_heads=6,
                                     num_classes=1000, attention_type="scaled_dot_product").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000)
    assert torch.isfinite(out).all()


# -- configs and constructor errors -------------------------------------------------------------


def test_config_object_and_keywords_build_the_same_model() -> None:
    config = ViTConfig(**SMALL, reg_tokens=1, global_pool="avg")
    a = vitkit.VisionTransformer(config)
    b = vitkit.VisionTransformer(**SMALL, reg_tokens=1, global_pool="avg")
    assert a.config == b.config == config
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    c = vitkit.VisionTransformer(config, num_classes=3)  # keywords override the config
    assert c.config.num_classes == 3 and c.head.out_features == 3 and config.num_classes == 10


def test_config_is_frozen_and_round_trips() -> None:
    config = ViTConfig(**SMALL, act_layer=nn.GELU, norm_layer=functools.partial(nn.LayerNorm, eps=1e-6))
    assert config.act_layer == "gelu" and config.norm_layer == "layernorm" and config.norm_eps == 1e-6
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.depth = 3  # type: ignore[misc]
    assert config_from_dict(config.to_dict()) == config
    assert ViTConfig.from_dict(config.to_dict()) == config
    assert build_model(config.to_dict()).config == config
    assert config.replace(depth=3).depth == 3 and config.depth == 2


BAD_ARGS: list[tuple[dict[str, Any], str]] = [
    ({"num_heads": 5}, "embed_dim"),
    ({"global_pool": "mean"}, "global_pool"),
    ({"attention_type": "fastest"}, "attention backend"),
    ({"img_size": 30}, "img_size"),
    ({"depth": -1}, "depth"),
    ({"depth": 0}, "depth"),
    ({"class_token": False}, "class_token"),  # global_pool='token' (the default) without a class token
    ({"act_layer": "mish"}, "act_layer"),
    ({"norm_layer": "batchnorm"}, "norm_layer"),
    ({"mlp_layer": "moe"}, "mlp_layer"),
    ({"patch_size": 0}, "patch_size"),
    ({"num_classes": -1}, "num_classes"),
    ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ({"pos_embed": "rope"}, "pos_embed"),
    ({"reg_tokens": -1}, "reg_tokens"),
    ({"init_values": 0.0}, "init_values"),
    ({"num_recomputing_layers": -1}, "num_recomputing_layers"),
    ({"select_layer": 0}, "select_layer"),
    ({"mlp_ratio": 0.0}, "mlp_ratio"),
    ({"not_an_argument": 1}, "not_an_argument"),
]


@pytest.mark.parametrize(("overrides", "match"), BAD_ARGS, ids=[m for _, m in BAD_ARGS])
def test_bad_constructor_arguments_are_value_errors_naming_them(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vitkit.VisionTransformer(**{**SMALL, **overrides})


@pytest.mark.parametrize("option", ["crop_remainder", "dynamic_img_pad"])
def test_indivisible_img_size_accepted_with_crop_or_pad(option: str) -> None:
    model = small_vit(img_size=30, **{option: True}).eval()
    assert model.patch_embed.grid_size == ((4, 4) if option == "dynamic_img_pad" else (3, 3))
    with torch.no_grad():
        assert model(images(height=30, width=30)).shape == (2, 10)


@pytest.mark.parametrize(
    ("shape", "match"), [((2, 1, 32, 32), "3, height, width"), ((2, 3, 48, 48), "img_size"), ((3, 32, 32), "batch")]
)
def test_wrong_input_at_forward_is_value_error(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small_vit()(torch.randn(*shape))


def test_dynamic_img_size_at_native_size_equals_static_model() -> None:
    static = randomize_(small_vit()).eval()
    dynamic = small_vit(dynamic_img_size=True).eval()
    dynamic.load_state_dict(static.state_dict())
    x = images()
    with torch.no_grad():
        assert_close(dynamic(x), static(x))
        assert dynamic(images(height=48, width=16)).shape == (2, 10)


def test_sincos_pos_embed_is_fixed_and_not_saved() -> None:
    model = small_vit(pos_embed="sincos")
    assert "pos_embed" not in model.state_dict()
    assert not any(n == "pos_embed" for n, _ in model.named_parameters())
    with torch.no_grad():
        assert model(images()).shape == (2, 10)


def test_unknown_config_field_in_from_dict() -> None:
    data = ViTConfig(**SMALL).to_dict() | {"flash": True}
    with pytest.raises(ValueError, match="flash"):
        config_from_dict(data)
    with pytest.raises(ValueError, match="flash"):
        ViTConfig.from_dict(data)


# -- property test ------------------------------------------------------------------------------


@st.composite
def small_configs(draw: st.DrawFn) -> dict[str, Any]:
    heads = draw(st.integers(1, 4))
    head_dim = draw(st.sampled_from([4, 8, 12]))
    patch = draw(st.sampled_from([4, 8]))
    class_token = draw(st.booleans())
    pools = ["", "avg", "max", "avgmax", "map"] + (["token"] if class_token else [])
    return dict(
        img_size=(patch * draw(st.integers(1, 4)), patch * draw(st.integers(1, 4))),
        patch_size=patch,
        in_chans=draw(st.integers(1, 3)),
        num_classes=draw(st.integers(0, 5)),
        embed_dim=heads * head_dim,
        depth=draw(st.integers(1, 3)),
        num_heads=heads,
        mlp_ratio=draw(st.sampled_from([1.0, 2.0, 4.0])),
        qkv_bias=draw(st.booleans()),
        qk_norm=draw(st.booleans()),
        class_token=class_token,
        reg_tokens=draw(st.integers(0, 2)),
        global_pool=draw(st.sampled_from(pools)),
        pre_norm=draw(st.booleans()),
        norm_pre=draw(st.booleans()),
        init_values=draw(st.sampled_from([None, 1e-2])),
        mlp_layer=draw(st.sampled_from(["mlp", "swiglu", "swiglu_packed"])),
        act_layer=draw(st.sampled_from(["gelu", "gelu_tanh", "quick_gelu", "silu"])),
        norm_layer=draw(st.sampled_from(["layernorm", "rmsnorm"])),
        pos_embed=draw(st.sampled_from(["learn", "sincos", "none"])),
        no_embed_class=draw(st.booleans()),
        attention_type=draw(st.sampled_from(["math", "sdpa", "auto"])),
    )


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=small_configs(), batch=st.integers(1, 2))
def test_random_small_configs_build_and_run(config: dict[str, Any], batch: int) -> None:
    model = vitkit.VisionTransformer(**config).eval()
    h, w = config["img_size"]
    with torch.no_grad():
        out = model(torch.randn(batch, config["in_chans"], h, w))
    tokens = (h // config["patch_size"]) * (w // config["patch_size"])
    width = config["num_classes"] or config["embed_dim"]
    if config["global_pool"] == "":
        assert out.shape == (batch, tokens + int(config["class_token"]) + config["reg_tokens"], width)
    else:
        assert out.shape == (batch, width)
    assert torch.isfinite(out).all()
    assert config_from_dict(model.config.to_dict()) == model.config
