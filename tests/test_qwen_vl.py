"""The vision towers of Qwen2.5-VL and Qwen3-VL: directories saved by transformers' towers (alone or inside the whole
VLM) load, and a packed batch of images of several sizes, and clips, gives per image the merged tokens (and Qwen3-VL's
deepstack features) that the HF tower gives for it, in HF's order; window attention and the RoPE axes matter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel
from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionModel
from typer.testing import CliRunner

import vitkit
from interop_helpers import cuda_kernel_usable, realistic_
from vitkit.checkpoints import load_checkpoint
from vitkit.cli import app
from vitkit.data import DataConfig, eval_transform, smart_resize

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


def hf_inputs(items: list[torch.Tensor], patch: int, merge: int = MERGE,
              frames: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The processors' flattened patches and grid_thw: images as `frames` equal frames, a clip's frames padded with
    its last to a multiple of `frames`; patches in merge-group order, each (C, T, p, p)."""
    flat, grids = [], []
    for item in items:
        video = item[None].expand(frames, -1, -1, -1) if item.dim() == 3 else item  # (T, C, H, W)
        if video.shape[0] % frames:
            video = torch.cat([video, video[-1:].expand(frames - video.shape[0] % frames, -1, -1, -1)])
        t, c, h, w = video.shape
        gt, gh, gw = t // frames, h // patch, w // patch
        patches = video.reshape(gt, frames, c, gh // merge, merge, patch, gw // merge, merge, patch)
        flat.append(patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gt * gh * gw, -1))
        grids.append((gt, gh, gw))
    return torch.cat(flat), torch.tensor(grids)


def hf_outputs(model: torch.nn.Module, items: list[torch.Tensor], patch: int) -> tuple[list, list[list]]:
    """Per item, the HF tower's merged tokens (pooler_output rows) and each deepstack feature's rows."""
    merge, frames = model.config.spatial_merge_size, model.config.temporal_patch_size
    pixels, grid_thw = hf_inputs(items, patch, merge, frames)
    with torch.no_grad():
        out = model(pixels, grid_thw=grid_thw)
    counts = (grid_thw.prod(-1) // merge**2).tolist()
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


# Settings the released towers do not use but transformers' towers take: its default full-attention blocks (past a
# small depth: every block windowed), a window that is no whole number of merge groups (HF rounds it down), one
# frame per patch, no merging, merge groups of 3.
VARIANTS = [
    ("qwen2.5", dict(depth=3, fullatt_block_indexes=[7, 15, 23, 31], window_size=100)),
    ("qwen2.5", dict(spatial_merge_size=1, temporal_patch_size=1)),
    ("qwen3", dict(temporal_patch_size=1, spatial_merge_size=3, deepstack_visual_indexes=[1])),
]


@pytest.mark.parametrize(("kind", "changes"), VARIANTS)
def test_other_tower_settings_equal_hf(tmp_path: Path, kind: str, changes: dict) -> None:
    hf, path = saved(tmp_path, kind, **changes)
    model = vitkit.load_pretrained(path)
    patch, merge = TOWERS[kind][2]["patch_size"], changes.get("spatial_merge_size", MERGE)
    grids = [(h // MERGE * merge, w // MERGE * merge) for h, w in GRIDS]
    items = [*pictures(patch, grids), *pictures(patch, grids[:1], frames=3)]
    tokens, deepstack = hf_outputs(hf, items, patch)
    with torch.no_grad():
        out = model.encode(model.pack(items))
    assert_items_close(out.tokens, tokens)
    for mine, theirs in zip(out.deepstack, deepstack, strict=True):
        assert_items_close(mine, theirs)


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


# Registered name -> (tower, the vision_config of the released model it is the tower of: Qwen/Qwen2.5-VL-*-Instruct,
# Qwen/Qwen3-VL-*), checked below against the HF tower built from it.
_Q25 = dict(depth=32, hidden_size=1280, num_heads=16)
_Q3_SMALL = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, deepstack_visual_indexes=[5, 11, 17])
_Q3_LARGE = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, deepstack_visual_indexes=[8, 16, 24])
QWEN_PEERS = {
    "qwen2_5_vl_vision_3b": ("qwen2.5", dict(_Q25, intermediate_size=3420, out_hidden_size=2048)),
    "qwen2_5_vl_vision_7b": ("qwen2.5", dict(_Q25, intermediate_size=3420, out_hidden_size=3584)),
    "qwen2_5_vl_vision_32b": ("qwen2.5", dict(_Q25, intermediate_size=3456, out_hidden_size=5120)),
    "qwen2_5_vl_vision_72b": ("qwen2.5", dict(_Q25, intermediate_size=3456, out_hidden_size=8192)),
    "qwen3_vl_vision_2b": ("qwen3", dict(_Q3_SMALL, out_hidden_size=2048)),
    "qwen3_vl_vision_4b": ("qwen3", dict(_Q3_SMALL, out_hidden_size=2560)),
    "qwen3_vl_vision_8b": ("qwen3", dict(_Q3_LARGE, out_hidden_size=4096)),
    "qwen3_vl_vision_32b": ("qwen3", dict(_Q3_LARGE, out_hidden_size=5120)),
    "qwen3_vl_vision_30b_a3b": ("qwen3", dict(_Q3_LARGE, out_hidden_size=2048)),
    "qwen3_vl_vision_235b_a22b": ("qwen3", dict(_Q3_LARGE, out_hidden_size=4096)),
}


@pytest.mark.parametrize("name", sorted(QWEN_PEERS))
def test_registered_towers_are_the_released_ones(name: str) -> None:
    """The parameters of the HF tower of the released config, and the settings transformers fills in for it."""
    kind, settings = QWEN_PEERS[name]
    cls, config_cls, _ = TOWERS[kind]
    config = config_cls(**settings)
    with torch.device("meta"):
        theirs = cls(config)
        mine = vitkit.create_model(name)
    shapes = sorted(tuple(p.shape) for p in theirs.parameters())
    assert sorted(tuple(p.shape[p.dim() == 3:]) for p in mine.parameters()) == shapes  # (1, N, D) table
    assert mine.config.rope_theta in (None, config.rope_parameters["rope_theta"])
    assert mine.config.merge_size == config.spatial_merge_size
    assert mine.config.temporal_patch_size == config.temporal_patch_size
    if kind == "qwen2.5":
        assert mine.config.window_size == config.window_size // config.patch_size
        assert mine.config.full_attention_blocks == tuple(config.fullatt_block_indexes)


def photo_folder(root: Path, sizes: tuple[tuple[int, int], ...] = ((150, 230), (90, 60), (260, 120))) -> Path:
    """A folder of PNGs of different sizes and aspect ratios."""
    gen = torch.Generator().manual_seed(4)
    (root / "a").mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
        pixels = torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(root / "a" / f"{i}.png")
    return root


@pytest.mark.parametrize("pool", ["none", "avg"])
def test_vitkit_embed_writes_each_images_merged_tokens(tmp_path: Path, pool: str) -> None:
    """`vitkit embed` on a tower: every image at its smart_resize size, packed; pool 'none' stores its merged tokens
    (rows of different lengths), 'avg' their mean."""
    _, path = saved(tmp_path, "qwen2.5")
    folder = photo_folder(tmp_path / "photos")
    result = CliRunner().invoke(app, ["embed", "--checkpoint", str(path), "--data", str(folder), "--pool", pool,
                                      "--out", str(tmp_path / "emb")], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    rows, index = vitkit.load_embeddings(tmp_path / "emb")
    config = json.loads((tmp_path / "emb" / "embed_config.json").read_text())
    assert config["packing"] is not None and config["transform"]["max_pixels"] == 28 * 28 * 16384
    model = vitkit.load_pretrained(path)
    transform = eval_transform(DataConfig.of(model.config), keep_aspect=True)
    for row, name in zip(rows, index.paths, strict=True):
        image = transform(Image.open(name).convert("RGB"))
        h, w = Image.open(name).size[::-1]
        assert tuple(image.shape[1:]) == smart_resize(h, w, 28, 56 * 56, 28 * 28 * 16384)
        with torch.no_grad():
            merged = model.encode(model.pack([image])).tokens[0]
        torch.testing.assert_close(row, merged if pool == "none" else merged.mean(0), rtol=0.0, atol=ATOL)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["flash", "xformers", "sdpa"])
def test_cuda_kernels_run_windows_and_images_as_varlen_segments(tmp_path: Path, backend: str) -> None:
    """On CUDA in half precision: FlashAttention's / xFormers' varlen kernels with the window and image cu_seqlens
    give the HF tower's fp32 merged tokens within half precision's error."""
    if not cuda_kernel_usable(backend):
        pytest.skip(f"{backend} is not usable on this machine")
    hf, path = saved(tmp_path, "qwen2.5")
    model = vitkit.load_pretrained(path, attention=backend).cuda().to(torch.bfloat16)
    items = pictures(14)
    expected = hf_outputs(hf, items, 14)[0]
    with torch.no_grad():
        out = model.encode(model.pack([x.cuda().to(torch.bfloat16) for x in items]))
    for mine, theirs in zip(out.tokens, expected, strict=True):
        torch.testing.assert_close(mine.float().cpu(), theirs, atol=2e-2 * float(theirs.abs().max()), rtol=2e-2)


def test_tile_order_is_windows_then_merge_groups() -> None:
    from vitkit.packing import tile_order

    order = tile_order(4, 6, (4, 2)).tolist()  # windows 4 x 4 (the right one clipped to 4 x 2), groups 2 x 2
    assert order[:16] == [0, 1, 6, 7, 2, 3, 8, 9, 12, 13, 18, 19, 14, 15, 20, 21]
    assert order[16:] == [4, 5, 10, 11, 16, 17, 22, 23]
    assert tile_order(3, 5, ()).tolist() == list(range(15))


def test_bad_sizes_and_settings_say_what_to_do() -> None:
    model = vitkit.create_model("qwen2_5_vl_vision_3b", depth=1, full_attention_blocks=(0,), embed_dim=64,
                                num_heads=4, mlp_hidden_dim=32, merge_dim=16)
    with pytest.raises(ValueError, match="multiples of 28 px"):
        model.pack([torch.randn(3, 42, 56)])  # 3 x 4 patches: no whole 2 x 2 groups
    with pytest.raises(ValueError, match="multiples of 28 px"):
        model.encode(torch.randn(1, 3, 42, 56))
    with pytest.raises(ValueError, match="full_attention_blocks"):
        vitkit.create_model("qwen2_5_vl_vision_3b", depth=4)  # block 7 is no block of 4
    with pytest.raises(ValueError, match="class or register tokens"):
        vitkit.create_model("qwen3_vl_vision_2b", class_token=True, global_pool="token")
    with pytest.raises(ValueError, match="set merge_dim"):
        vitkit.create_model("vit_small_patch16_224", merge_size=2)
    with pytest.raises(ValueError, match="no patch merger"):
        vitkit.create_model("vit_small_patch16_224").encode(torch.randn(1, 3, 224, 224))


def test_sharded_vlm_checkpoint_reads_only_the_tower(tmp_path: Path) -> None:
    """A sharded whole-VLM directory (model.safetensors.index.json): only the shards that hold the tower are read
    (the others need not be there), and the key report lists the language model's keys as left out."""
    from safetensors.torch import save_file

    from vitkit.checkpoints.sources import read_source

    hf = hf_tower("qwen2.5")
    tower = {f"visual.{k}": v.contiguous() for k, v in hf.state_dict().items()}
    language = {"model.embed_tokens.weight": torch.randn(50, 8), "lm_head.weight": torch.randn(50, 8)}
    root = tmp_path / "vlm"
    root.mkdir()
    shards = {"model-00001-of-00002.safetensors": language, "model-00002-of-00002.safetensors": tower}
    for name, tensors in shards.items():
        save_file(tensors, root / name)
    weight_map = {key: name for name, tensors in shards.items() for key in tensors}
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = {"model_type": "qwen2_5_vl", "vision_config": hf.config.to_dict()}
    (root / "config.json").write_text(json.dumps(config))
    (root / "model-00001-of-00002.safetensors").unlink()  # the language model's shard is never opened
    read = read_source(root).state_dict
    assert read["lm_head.weight"].is_meta and not read["visual.merger.ln_q.weight"].is_meta
    loaded = load_checkpoint(root)
    assert loaded.report.clean and any("language model" in line for line in loaded.report.dropped)
    items = pictures(14)
    with torch.no_grad():
        out = loaded.model.encode(loaded.model.pack(items))
    assert_items_close(out.tokens, hf_outputs(hf, items, 14)[0])


def test_maps_and_intermediates_come_back_in_raster_order(tmp_path: Path) -> None:
    """Dense tokens of a merging tower come merge group by merge group; feature maps and attention heat maps are put
    back in raster order: a patch's own token lands on its cell."""
    from vitkit.explain import attention_maps

    _, path = saved(tmp_path, "qwen3")
    model = vitkit.load_pretrained(path)
    images = torch.stack(pictures(16, [(4, 6)]))
    with torch.no_grad():
        maps = model.forward_intermediates(images, indices=[0], intermediates_only=True)[0]  # (1, D, 4, 6)
        tokens = model.forward_features(images, layer=0, norm=False)  # (1, 24, D) in merge-group order
    order = model.token_order(4, 6)
    assert order.tolist()[:4] == [0, 1, 6, 7]
    torch.testing.assert_close(maps.flatten(2).transpose(1, 2)[0, order], tokens[0])
    heat = attention_maps(model, images).heat
    assert heat.shape == (1, 4, 6)
