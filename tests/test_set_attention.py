"""The attention kernel is run-time state with one home: `model.attention_choice`, set by `set_attention` (or seed
000's `attention_type` / `deterministic`), handed to every attention layer (blocks and MAP pool) with each call;
`vitkit.attention.use(backend)` overrides it for a scope. Layers of a model hold no copy, and the config holds none."""

from __future__ import annotations

import logging

import pytest
import torch

import vitkit
from interop_helpers import assert_close, images, randomize_
from vitkit.attention import AttentionChoice, BackendUnavailableError
from vitkit.attention import dispatch as attention_dispatch

MAP_KW = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=5, class_token=False,
              global_pool="map")


def pair(backend: str, **overrides: object) -> tuple[vitkit.VisionTransformer, vitkit.VisionTransformer]:
    """A MAP-pooled model on `backend` and the same weights on the math reference."""
    model = randomize_(vitkit.VisionTransformer(**MAP_KW, **overrides, attention_type=backend))
    reference = vitkit.VisionTransformer(**MAP_KW, **overrides, attention_type="math").eval()
    reference.load_state_dict(model.state_dict())
    return model, reference


def own_choices(model: vitkit.VisionTransformer) -> list[AttentionChoice | None]:
    return [block.attn.attention for block in model.blocks] + [model.attn_pool.attention]


def test_set_attention_switches_blocks_and_map_pool() -> None:
    model, reference = pair("flash")  # flash cannot run on CPU tensors: every layer must leave it
    x = images(height=16, width=16)
    with torch.no_grad(), pytest.raises(BackendUnavailableError, match="flash"):
        model(x)
    model.set_attention("scaled_dot_product")  # the seed's name for math
    assert model.attention_choice == AttentionChoice("math") and model.attention_backend == "math"
    assert own_choices(model) == [None] * 3  # the layers ask the model at call time
    with torch.no_grad():
        assert_close(model(x), reference(x), atol=1e-6)
    model.set_attention("sdpa", deterministic=True)
    assert model.attention_choice == AttentionChoice("sdpa", deterministic=True)
    model.set_attention("auto")
    assert model.attention_choice == AttentionChoice("auto", deterministic=True)  # None leaves the flag as it was


def test_the_kernel_is_not_in_the_config() -> None:
    model, _ = pair("flash")
    assert "attention_type" not in model.config.to_dict() and "deterministic" not in model.config.to_dict()
    with pytest.raises(ValueError, match=r"attention_type is not part of a model config.*set_attention"):
        model.config.replace(attention_type="math")


def test_set_attention_validates_the_name_once_and_changes_nothing_on_error() -> None:
    model, _ = pair("math")
    with pytest.raises(ValueError, match="unknown attention backend 'fastest'"):
        model.set_attention("fastest")
    assert model.attention_choice == AttentionChoice("math")


def test_packed_forward_runs_on_the_set_backend() -> None:
    model, reference = pair("flash", dynamic_img_size=True)
    batch = model.pack([images(1, 16, 16)[0], images(1, 8, 12, seed=2)[0]], max_tokens=64)
    with torch.no_grad(), pytest.raises(BackendUnavailableError, match="flash"):
        model.forward_packed(batch)
    model.set_attention("sdpa")
    with torch.no_grad():
        assert_close(model.forward_packed(batch), reference.forward_packed(batch), atol=1e-5)


def test_use_overrides_a_model_for_a_scope() -> None:
    model, reference = pair("flash")
    x = images(height=16, width=16)
    with torch.no_grad():
        with vitkit.attention.use("math"):
            assert_close(model(x), reference(x), atol=1e-6)
        with pytest.raises(BackendUnavailableError):
            model(x)
    assert model.attention_backend == "flash"


def test_use_is_a_request_even_over_a_preference() -> None:
    model, _ = pair("math")
    model.set_attention("math", fallback=True)
    with torch.no_grad(), vitkit.attention.use("flash"), pytest.raises(BackendUnavailableError, match="flash"):
        model(images(height=16, width=16))


def test_recomputed_blocks_run_under_the_scope_of_their_forward() -> None:
    """Backward recomputes checkpointed blocks outside the `use` block the forward ran in: they must run its kernel
    again, not the model's own (here one that cannot run at all)."""
    model, reference = pair("flash", num_recomputing_layers=2)
    x = images(height=16, width=16)
    with vitkit.attention.use("math"):
        loss = model(x).square().sum()
    loss.backward()  # recomputes both blocks, outside the scope
    reference.train()
    reference.load_state_dict(model.state_dict())
    reference(x).square().sum().backward()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert_close(p.grad, q.grad, atol=1e-5)


def test_a_preference_gives_way_where_its_kernel_cannot_run(caplog: pytest.LogCaptureFixture) -> None:
    """sdpa:flash runs on CPU, but not with attention dropout: as a preference it hands such calls to auto (and says
    so once); as a request it raises."""
    model, _ = pair("math", attn_drop_rate=0.5)
    model.train()
    x = images(height=16, width=16)
    model.set_attention("sdpa:flash")
    with pytest.raises(BackendUnavailableError, match="dropout"):
        model(x)
    model.set_attention("sdpa:flash", fallback=True)
    attention_dispatch._log_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger="vitkit"):
        model(x)
        model(x)
    said = [r.getMessage() for r in caplog.records if "sdpa:flash" in r.getMessage()]
    assert len(said) == 1 and "dropout" in said[0] and "auto" in said[0]
    model.eval()
    caplog.clear()
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="vitkit"):  # where it can run, it runs
        preferred = model(x)
        model.set_attention("math")
        assert_close(preferred, model(x), atol=1e-5)
    assert not caplog.records


def test_standalone_seed_layers_keep_their_own_choice() -> None:
    layer = vitkit.EfficientAttention(32, 4, attention_type="flash")
    x = torch.randn(2, 5, 32)
    with pytest.raises(BackendUnavailableError):
        layer(x)
    assert_close(layer(x, attention=AttentionChoice("math")), layer(x, attention=AttentionChoice("sdpa")), atol=1e-6)
