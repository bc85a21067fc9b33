"""Seed-style construction reproduces seed 000: `vitkit.VisionTransformer(**kwargs)` with the seed's arguments and
defaults gives the seed's outputs (and gradients) on the same weights. The reference is `seed000.py`, a faithful
re-implementation of the seed's classes on timm's layers."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import seed000
import vitkit
from interop_helpers import assert_close, assert_parity, images, realistic_
from vitkit.checkpoints import load_checkpoint

SEED_KW: dict[str, Any] = dict(img_size=64, patch_size=16, embed_dim=96, depth=3, num_heads=3)
SEED_ATOL = 1e-5


def seed_pair(**kwargs: Any) -> tuple[seed000.VisionTransformer, vitkit.VisionTransformer]:
    """The seed's model (its own initialisation) and vitkit's, built with the same arguments, same weights."""
    torch.manual_seed(0)
    seed = seed000.VisionTransformer(**kwargs).eval()
    mine = vitkit.VisionTransformer(**kwargs).eval()
    mine.load_state_dict(seed.state_dict())  # strict; qkv_bias=False: the seed's zero qkv bias is no bias
    return seed, mine


def make_realistic_(seed: seed000.VisionTransformer, qkv_bias: bool) -> None:
    realistic_(seed)
    if not qkv_bias:  # the seed keeps a qkv bias whatever the flag; with qkv_bias=False it stays at its zero init
        for block in seed.blocks:
            nn.init.zeros_(block.attn.qkv.bias)


@pytest.mark.parametrize("qkv_bias", [True, False])
@pytest.mark.parametrize("num_classes", [0, 10])
@pytest.mark.parametrize("global_pool", ["token", ""])
@pytest.mark.parametrize("pre_norm", [True, False])
def test_seed_arguments_give_seed_outputs(pre_norm: bool, global_pool: str, num_classes: int, qkv_bias: bool) -> None:
    kwargs = dict(SEED_KW, pre_norm=pre_norm, global_pool=global_pool, num_classes=num_classes, qkv_bias=qkv_bias)
    seed, mine = seed_pair(**kwargs)
    x = images(height=64, width=64)
    with torch.no_grad():
        expected = seed(x)
        assert mine(x).shape == expected.shape  # '' applies the head to every token: (B, 1 + 16, classes or D)
        assert_close(mine(x), expected, SEED_ATOL)  # the seed's own initialisation (std 0.02)
    make_realistic_(seed, qkv_bias)
    mine.load_state_dict(seed.state_dict())
    assert_parity(mine, seed, x, mine, seed, atol=SEED_ATOL)


def test_defaults_are_the_seeds() -> None:
    """Every default the seed states is the constructor's default: LayerNorm eps 1e-5, exact GELU, ..."""
    config = vitkit.VisionTransformer(**SEED_KW).config
    seed_defaults = {name: p.default for name, p in inspect.signature(seed000.VisionTransformer).parameters.items()
                     if name not in SEED_KW}
    assert (config.norm_layer, config.norm_eps) == ("layernorm", 1e-5) == ("layernorm", nn.LayerNorm(4).eps)
    assert config.act_layer == "gelu" and seed_defaults["act_layer"] is nn.GELU
    for name in ("in_chans", "num_classes", "mlp_ratio", "qkv_bias", "drop_rate", "attn_drop_rate",
                 "drop_path_rate", "weight_init", "pre_norm", "num_recomputing_layers", "global_pool"):
        assert getattr(config, name) == seed_defaults[name], name
    # The kernel is a run-time choice, not config: vitkit's 'auto' picks it; the seed's names set it.
    assert vitkit.VisionTransformer(**SEED_KW).attention_choice.deterministic is seed_defaults["deterministic"]
    seeded = vitkit.VisionTransformer(**SEED_KW, attention_type="scaled_dot_product", deterministic=True)
    assert seeded.attention_choice == vitkit.attention.AttentionChoice("math", deterministic=True)


def test_positional_seed_form() -> None:
    torch.manual_seed(0)
    seed = seed000.VisionTransformer(64, 16, 3, 10, 96, 3, 3).eval()
    mine = vitkit.VisionTransformer(64, 16, 3, 10, 96, 3, 3).eval()
    mine.load_state_dict(seed.state_dict())
    assert_parity(mine, seed, images(height=64, width=64), mine, seed, atol=SEED_ATOL)


SEED_LAYERS = {
    "classes": (nn.LayerNorm, nn.GELU, 1e-5, "gelu"),
    "partial_eps": (functools.partial(nn.LayerNorm, eps=1e-6), nn.GELU, 1e-6, "gelu"),
    "tanh_gelu": (nn.LayerNorm, functools.partial(nn.GELU, approximate="tanh"), 1e-5, "gelu_tanh"),
}


@pytest.mark.parametrize("case", list(SEED_LAYERS))
def test_seed_layer_objects_round_trip_through_config_json(case: str, tmp_path: Path) -> None:
    norm_layer, act_layer, eps, act = SEED_LAYERS[case]
    seed, mine = seed_pair(**SEED_KW, norm_layer=norm_layer, act_layer=act_layer)
    assert (mine.config.norm_eps, mine.config.act_layer) == (eps, act)
    assert all(m.eps == eps for m in mine.modules() if isinstance(m, nn.LayerNorm))
    make_realistic_(seed, qkv_bias=True)
    mine.load_state_dict(seed.state_dict())
    vitkit.save_pretrained(mine, tmp_path / "model")
    loaded = vitkit.load_pretrained(tmp_path / "model")
    assert loaded.config == mine.config
    assert_parity(loaded, seed, images(height=64, width=64), loaded, seed, atol=SEED_ATOL)


def test_recomputing_layers_in_training_give_seed_outputs_and_gradients() -> None:
    """The seed recomputes every block (timm's checkpoint_seq), vitkit the first N: the same loss and gradients,
    drop path included (recomputation replays the RNG)."""
    kwargs = dict(SEED_KW, num_classes=10, num_recomputing_layers=2, drop_path_rate=0.2)
    seed, mine = seed_pair(**kwargs)
    make_realistic_(seed, qkv_bias=True)
    mine.load_state_dict(seed.state_dict())
    assert mine.num_recomputing_layers == 2
    x = images(batch=4, height=64, width=64)
    losses, grads = [], []
    for model in (seed, mine):
        model.train()
        torch.manual_seed(7)  # the same drop-path masks for both
        loss = model(x).logsumexp(-1).mean()
        loss.backward()
        losses.append(loss.detach())
        grads.append({name: p.grad for name, p in model.named_parameters()})
    assert_close(losses[1], losses[0], SEED_ATOL)
    assert grads[1].keys() == grads[0].keys()
    for name, grad in grads[1].items():
        assert_close(grad, grads[0][name], SEED_ATOL)


def test_nonzero_qkv_bias_does_not_load_into_a_bias_free_model() -> None:
    """Only a zero qkv bias (the seed's untrained qkv_bias=False model) is dropped; a trained one is refused."""
    seed, _ = seed_pair(**SEED_KW, qkv_bias=False)
    realistic_(seed)
    mine = vitkit.VisionTransformer(**SEED_KW, qkv_bias=False)
    with pytest.raises(RuntimeError, match=r"blocks\.0\.attn\.qkv\.bias"):
        mine.load_state_dict(seed.state_dict())


def test_seed_checkpoint_with_qkv_bias_false_loads_from_a_file(tmp_path: Path) -> None:
    """Through `load_pretrained(model=...)` too: the zero biases are dropped and reported, the rest is strict."""
    seed, _ = seed_pair(**SEED_KW, num_classes=10, qkv_bias=False)
    save_file(seed.state_dict(), str(tmp_path / "seed.safetensors"))
    mine = vitkit.VisionTransformer(**SEED_KW, num_classes=10, qkv_bias=False)
    loaded = load_checkpoint(tmp_path / "seed.safetensors", model=mine, strict=True)
    assert loaded.report.clean and any("3 all-zero qkv biases" in line for line in loaded.report.dropped)
    assert_parity(mine, seed, images(height=64, width=64), mine, seed, atol=SEED_ATOL)
