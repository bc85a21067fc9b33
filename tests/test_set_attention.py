"""The attention kernel is a run-time choice: `model.set_attention(backend)` switches every attention layer (blocks
and the MAP pool) at once, `vitkit.attention.use(backend)` does it for a scope; the config keeps the backend the
model was built with."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vitkit
from interop_helpers import assert_close, images, randomize_
from vitkit.attention import BackendUnavailableError

MAP_KW = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=5, class_token=False,
              global_pool="map")


def pair(backend: str, **overrides: object) -> tuple[vitkit.VisionTransformer, vitkit.VisionTransformer]:
    """A MAP-pooled model on `backend` and the same weights on the math reference."""
    model = randomize_(vitkit.VisionTransformer(**MAP_KW, **overrides, attention_type=backend))
    reference = vitkit.VisionTransformer(**MAP_KW, **overrides, attention_type="math").eval()
    reference.load_state_dict(model.state_dict())
    return model, reference


def layer_settings(model: vitkit.VisionTransformer) -> list[tuple[str, bool]]:
    layers = [block.attn for block in model.blocks] + [model.attn_pool]
    return [(layer.attention_type, layer.deterministic) for layer in layers]


def test_set_attention_switches_blocks_and_map_pool() -> None:
    model, reference = pair("flash")  # flash cannot run on CPU tensors: every layer must leave it
    x = images(height=16, width=16)
    with torch.no_grad(), pytest.raises(BackendUnavailableError, match="flash"):
        model(x)
    model.set_attention("scaled_dot_product")  # the seed's name for math
    assert layer_settings(model) == [("math", False)] * 3 and model.attention_backend == "math"
    assert model.config.attention_type == "flash"  # the config keeps what the model was built with
    with torch.no_grad():
        assert_close(model(x), reference(x), atol=1e-6)
    model.set_attention("sdpa", deterministic=True)
    assert layer_settings(model) == [("sdpa", True)] * 3
    model.set_attention("auto")
    assert layer_settings(model) == [("auto", True)] * 3  # deterministic=None leaves the flag as it was


def test_set_attention_validates_the_name_once_and_changes_nothing_on_error() -> None:
    model, _ = pair("math")
    with pytest.raises(ValueError, match="unknown attention backend 'fastest'"):
        model.set_attention("fastest")
    assert layer_settings(model) == [("math", False)] * 3


def test_packed_forward_runs_on_the_set_backend() -> None:
    model, reference = pair("flash", dynamic_img_size=True)
    model.set_attention("sdpa")
    batch = model.pack([images(1, 16, 16)[0], images(1, 8, 12, seed=2)[0]], max_tokens=64)
    with torch.no_grad():
        assert_close(model.forward_packed(batch), reference.forward_packed(batch), atol=1e-5)


def test_save_pretrained_keeps_the_built_backend(tmp_path: Path) -> None:
    model, _ = pair("sdpa")
    model.set_attention("math")
    vitkit.save_pretrained(model, tmp_path / "m")
    loaded = vitkit.load_pretrained(tmp_path / "m")
    assert loaded.config.attention_type == loaded.attention_backend == "sdpa"


def test_use_overrides_a_model_for_a_scope() -> None:
    model, reference = pair("flash")
    x = images(height=16, width=16)
    with torch.no_grad():
        with vitkit.attention.use("math"):
            assert_close(model(x), reference(x), atol=1e-6)
        with pytest.raises(BackendUnavailableError):
            model(x)
    assert model.attention_backend == "flash"
