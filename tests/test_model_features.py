"""The model owns its features: `forward_features(x_or_packed_batch, layer=, norm=)` and `pool(tokens, pool=,
batch=)` are the one path from an image to a feature row, dense or packed, and the one place a pooling is chosen;
the embeddings room uses nothing else of the model, and nothing outside `models/` imports its private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import vitkit
from interop_helpers import assert_close, realistic_

SRC = Path(__file__).resolve().parents[1] / "src" / "vitkit"
TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=4, num_classes=5, dynamic_img_size=True)
MODELS = {
    "token": dict(global_pool="token", reg_tokens=1),
    "avg": dict(global_pool="avg", class_token=False),
    "map": dict(global_pool="map", class_token=False, reg_tokens=2),
    "none": dict(global_pool="", num_classes=0),
}


def tower(kind: str) -> vitkit.VisionTransformer:
    return realistic_(vitkit.VisionTransformer(**{**TINY, **MODELS[kind]}))


def pools(kind: str) -> list[str]:
    own = {"token", "map"} & {MODELS[kind].get("global_pool")}
    return ["avg", "max", "avgmax", "none", *own, None]


def sizes() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(3, h, w, generator=gen) for h, w in ((16, 16), (8, 20), (12, 4), (20, 12))]


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("layer", [None, -1, -2, 0])
@pytest.mark.parametrize("norm", [True, False])
def test_dense_features_are_the_blocks_output(kind: str, layer: int | None, norm: bool) -> None:
    model = tower(kind)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        states = model.forward_hidden_states(x)  # the embedding output, then each block's
        hidden = states[-1 if layer is None else layer % 3 + 1]
        want = model.norm(hidden) if norm else hidden
        assert_close(model.forward_features(x, layer=layer, norm=norm), want, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_pool_default_is_the_heads_pooling(kind: str) -> None:
    model = tower(kind)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        tokens = model.forward_features(x)
        pooled = model.pool(tokens)
        if kind == "none":
            assert model.resolve_pool() == "none" and pooled is tokens
        else:
            assert_close(model.fc_norm(pooled), model.forward_head(tokens, pre_logits=True), atol=0)
    assert model.resolve_pool() == {"token": "token", "avg": "avg", "map": "map", "none": "none"}[kind]


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("layer", [None, -2])
def test_packed_rows_equal_each_image_alone_for_every_pool(kind: str, layer: int | None) -> None:
    model = tower(kind)
    images = sizes()
    batch = model.pack(images, max_tokens=24)
    assert 1 < batch.num_sequences < len(images)  # several sequences, several images in one
    with torch.no_grad():
        tokens = model.forward_features(batch, layer=layer)
        assert tokens.shape[:2] == (batch.num_sequences, batch.seq_len)
        for pool in pools(kind):
            rows = model.pool(tokens, pool, batch=batch)
            for i, image in enumerate(images):
                alone = model.pool(model.forward_features(image[None], layer=layer), pool)
                got = rows[i][None] if pool == "none" or (pool is None and kind == "none") else rows[i : i + 1]
                assert_close(got, alone, atol=1e-5)


def test_pool_names_what_the_model_lacks_and_packed_layouts_must_match() -> None:
    model = tower("avg")
    tokens = model.forward_features(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="pool 'token' needs a class token"):
        model.pool(tokens, "token")
    with pytest.raises(ValueError, match="pool 'map' needs an attention-pool"):
        model.pool(tokens, "map")
    with pytest.raises(ValueError, match="unknown pool 'cls'"):
        model.pool(tokens, "cls")
    with pytest.raises(ValueError, match="layer 3 is out of range for a model of 3 blocks"):
        model.forward_features(torch.randn(1, 3, 16, 16), layer=3)
    other = tower("token")  # 2 prefix tokens where the avg model has none
    batch = other.pack(sizes(), max_tokens=48)
    with pytest.raises(ValueError, match=r"packed for 2 prefix tokens.*model\.pack"):
        model.forward_features(batch)
    with pytest.raises(ValueError, match="do not follow the batch's layout"):
        other.pool(torch.zeros(1, batch.seq_len, 32), batch=batch)


def _private_imports_of_models(path: Path) -> list[str]:
    """What a module outside models/ takes from models/ that the `vitkit.models` package does not export (its
    public face): helpers of the model's own methods, private names."""
    public = set(vitkit.models.__all__)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or not node.module:
            continue
        ours = node.module.split(".")[0] == "models" if node.level else node.module.startswith("vitkit.models")
        if ours:  # vitkit's models room (relative from inside vitkit, or absolute), not another library's
            found += [f"{path.name}: from {node.module} import {a.name}" for a in node.names if a.name not in public]
    return found


def test_nothing_outside_models_imports_its_private_parts() -> None:
    offenders = [hit for path in SRC.rglob("*.py") if path.relative_to(SRC).parts[0] != "models"
                 for hit in _private_imports_of_models(path)]
    assert not offenders, offenders
