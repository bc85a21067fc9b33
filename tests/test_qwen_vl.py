"""The vision towers of Qwen2.5-VL and Qwen3-VL: directories saved by transformers' towers (alone or inside the whole
VLM) load, and a packed batch of images of several sizes, and clips, gives per image the merged tokens (and Qwen3-VL's
deepstack features) that the HF tower gives for it, in HF's order; window attention and the RoPE axes matter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel

import vitkit
from interop_helpers import realistic_
from vitkit.checkpoints import load_checkpoint

ATOL = 1e-5
MERGE = 2
# Small towers with the released architecture: real patch sizes, windows (8 x 8 patches = 112 px) in blocks 0 and 2.
QWEN2_5 = dict(depth=4, hidden_size=64, intermediate_size=80, num_heads=4, out_hidden_size=96,
               fullatt_block_indexes=[1, 3], window_size=112, patch_size=14)
QWEN3 = dict(depth=4, hidden_size=64, intermediate_size=80, num_heads=4, out_hidden_size=96,
             deepstack_visual_indexes=[0, 2], num_position_embeddings=64, patch_size=16)
# Patch grids (rows, columns): several larger than one window, an odd number of merge groups, tall and wide.
GRIDS = [(16, 12), (4, 6), (2, 2), (10, 18), (22, 8)]
TOWERS = {
    "qwen2.5": (Qwen2_5_VisionTransformerPretrainedModel, Qwen2_5_VLVisionConfig, QWEN2_5),
    "qwen3": (Qwen3VLVisionModel, Qwen3VLVisionConfig, QWEN3),
}


def hf_tower(kind: str, **changes: object) -> torch.nn.Module:
    cls, config_cls, settings = TOWERS[kind]
    config = config_cls(**{**settings, **changes})
    config._attn_implementation = "eager"
    return realistic_(cls(config), seed=3)


def saved(tmp_path: Path, kind: str, **changes: object) -> tuple[torch.nn.Module, Path]:
    model = hf_tower(kind, **changes)
    model.save_pretrained(tmp_path / kind)
    return model, tmp_path / kind


def pictures(patch: int, grids: list[tuple[int, int]] = GRIDS, frames: int | None = None) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    lead = () if frames is None else (frames,)
    return [torch.randn(*lead, 3, h * patch, w * patch, generator=gen) for h, w in grids]


def hf_inputs(items: list[torch.Tensor], patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The processors' flattened patches and grid_thw: images as two equal frames, a clip's frames padded with its
    last to an even count; patches in merge-group order, each (C, T, p, p)."""
    flat, grids = [], []
    for item in items:
        video = item[None].expand(2, -1, -1, -1) if item.dim() == 3 else item  # (T, C, H, W)
        if video.shape[0] % 2:
            video = torch.cat([video, video[-1:]])
        t, c, h, w = video.shape
        gt, gh, gw = t // 2, h // patch, w // patch
        patches = video.reshape(gt, 2, c, gh // MERGE, MERGE, patch, gw // MERGE, MERGE, patch)
        flat.append(patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gt * gh * gw, -1))
        grids.append((gt, gh, gw))
    return torch.cat(flat), torch.tensor(grids)


def hf_outputs(model: torch.nn.Module, items: list[torch.Tensor], patch: int) -> tuple[list, list[list]]:
    """Per item, the HF tower's merged tokens (pooler_output rows) and each deepstack feature's rows."""
    pixels, grid_thw = hf_inputs(items, patch)
    with torch.no_grad():
        out = model(pixels, grid_thw=grid_thw)
    counts = (grid_thw.prod(-1) // MERGE**2).tolist()
    deepstack = [list(f.split(counts)) for f in (getattr(out, "deepstack_features", None) or [])]
    return list(out.pooler_output.split(counts)), deepstack


def assert_items_close(mine: list[torch.Tensor], theirs: list[torch.Tensor], atol: float = ATOL) -> None:
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0.0, atol=atol)


@pytest.mark.parametrize("kind", TOWERS)
def test_packed_tower_equals_hf_per_image(tmp_path: Path, kind: str) -> None:
    hf, path = saved(tmp_path, kind)
    model = vitkit.load_pretrained(path)
    patch = TOWERS[kind][2]["patch_size"]
    items = pictures(patch)
    tokens, deepstack = hf_outputs(hf, items, patch)
    with torch.no_grad():
        out = model.encode(model.pack(items))
        pooled, merged = model.forward_packed(model.pack(items), return_tokens=True)
    assert_items_close(out.tokens, tokens)
    assert_items_close(merged, tokens)
    torch.testing.assert_close(pooled, torch.stack([t.mean(0) for t in tokens]), rtol=0.0, atol=ATOL)
    assert len(out.deepstack) == len(deepstack) == (2 if kind == "qwen3" else 0)
    for mine, theirs in zip(out.deepstack, deepstack, strict=True):
        assert_items_close(mine, theirs)
    assert [t.shape[0] for t in out.tokens] == [h * w // MERGE**2 for h, w in GRIDS]


@pytest.mark.parametrize("kind", TOWERS)
def test_clips_equal_hf_video(tmp_path: Path, kind: str) -> None:
    """A clip of T > 2 frames (odd T: the last frame repeated) beside still images, packed together."""
    hf, path = saved(tmp_path, kind)
    model = vitkit.load_pretrained(path)
    patch = TOWERS[kind][2]["patch_size"]
    items = [*pictures(patch, [(12, 10)], frames=5), *pictures(patch, [(4, 6)]), *pictures(patch, [(8, 8)], frames=4)]
    tokens, deepstack = hf_outputs(hf, items, patch)
    with torch.no_grad():
        out = model.encode(model.pack(items))
    assert [t.shape[0] for t in out.tokens] == [3 * 30, 6, 2 * 16]
    assert_items_close(out.tokens, tokens)
    for mine, theirs in zip(out.deepstack, deepstack, strict=True):
        assert_items_close(mine, theirs)


@pytest.mark.parametrize("kind", TOWERS)
def test_dense_batch_equals_packed(tmp_path: Path, kind: str) -> None:
    _, path = saved(tmp_path, kind)
    model = vitkit.load_pretrained(path)
    patch = TOWERS[kind][2]["patch_size"]
    batch = torch.stack(pictures(patch, [(10, 18)] * 2))
    with torch.no_grad():
        dense = model.encode(batch)
        packed = model.encode(model.pack(list(batch)))
        features = model(batch)
    assert_items_close(dense.tokens, packed.tokens)
    for mine, theirs in zip(dense.deepstack, packed.deepstack, strict=True):
        assert_items_close(mine, theirs)
    torch.testing.assert_close(features, torch.stack([t.mean(0) for t in packed.tokens]), rtol=0.0, atol=ATOL)


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_every_cpu_kernel(tmp_path: Path, backend: str) -> None:
    hf, path = saved(tmp_path, "qwen2.5")
    model = vitkit.load_pretrained(path, attention=backend)
    items = pictures(14)
    with torch.no_grad():
        out = model.encode(model.pack(items))
    assert_items_close(out.tokens, hf_outputs(hf, items, 14)[0])


def test_full_attention_everywhere_fails(tmp_path: Path) -> None:
    """The windows matter: the same weights attending across the whole image in every block differ from HF."""
    hf, path = saved(tmp_path, "qwen2.5")
    items = pictures(14)
    tokens = hf_outputs(hf, items, 14)[0]
    model = vitkit.load_pretrained(path, full_attention_blocks=(0, 1, 2, 3))
    with torch.no_grad():
        out = model.encode(model.pack(items))
    worst = max(float((a - b).abs().max()) for a, b in zip(out.tokens, tokens, strict=True))
    assert worst > 100 * ATOL
    # images within one window see no difference: the windows are what changed
    small = [t for t, (h, w) in zip(out.tokens, GRIDS, strict=True) if h <= 8 and w <= 8]
    assert_items_close(small, [t for t, (h, w) in zip(tokens, GRIDS, strict=True) if h <= 8 and w <= 8])


@pytest.mark.parametrize("kind", TOWERS)
def test_rope_on_swapped_axes_fails(tmp_path: Path, kind: str) -> None:
    hf, path = saved(tmp_path, kind)
    patch = TOWERS[kind][2]["patch_size"]
    items = pictures(patch)
    tokens = hf_outputs(hf, items, patch)[0]
    model = vitkit.load_pretrained(path, rope_indexing="xy")
    with torch.no_grad():
        out = model.encode(model.pack(items))
    assert max(float((a - b).abs().max()) for a, b in zip(out.tokens, tokens, strict=True)) > 100 * ATOL


def test_whole_vlm_checkpoint_loads_its_tower(tmp_path: Path) -> None:
    """A VLM's checkpoint: the tower under `model.visual.`, the language model's keys left out and reported."""
    from safetensors.torch import save_file

    hf = hf_tower("qwen3")
    state = {f"model.visual.{k}": v.contiguous() for k, v in hf.state_dict().items()}
    state["model.language_model.embed_tokens.weight"] = torch.zeros(10, 8)
    state["lm_head.weight"] = torch.zeros(10, 8)
    (tmp_path / "vlm").mkdir()
    save_file(state, tmp_path / "vlm" / "model.safetensors")
    config = {"model_type": "qwen3_vl", "vision_config": {**hf.config.to_dict()}, "text_config": {"hidden_size": 8}}
    (tmp_path / "vlm" / "config.json").write_text(json.dumps(config))
    loaded = load_checkpoint(tmp_path / "vlm")
    assert loaded.source_format == "hf-qwen3-vl"
    assert loaded.report.clean
    assert any("language model" in line for line in loaded.report.dropped)
    items = pictures(16)
    with torch.no_grad():
        out = loaded.model.encode(loaded.model.pack(items))
    assert_items_close(out.tokens, hf_outputs(hf, items, 16)[0])


def test_registered_towers_have_hf_shapes() -> None:
    """Each registered tower has the parameters of the HF tower built from the released config."""
    released = {
        "qwen2_5_vl_vision_7b": (TOWERS["qwen2.5"], dict(depth=32, hidden_size=1280, intermediate_size=3420,
                                                         num_heads=16, out_hidden_size=3584)),
        "qwen3_vl_vision_2b": (TOWERS["qwen3"], dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                                                     out_hidden_size=2048, deepstack_visual_indexes=[5, 11, 17])),
    }
    for name, ((cls, config_cls, _), settings) in released.items():
        with torch.device("meta"):
            theirs = cls(config_cls(**settings))
            mine = vitkit.create_model(name)
        shapes = sorted(tuple(p.shape) for p in theirs.parameters())
        assert sorted(tuple(p.shape[p.dim() == 3:]) for p in mine.parameters()) == shapes, name  # (1, N, D) table
