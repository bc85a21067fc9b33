"""What a one-line bug in the recently added rooms could break without any other test noticing (the surviving
mutants of tests/README.md): VLM towers (dense windows on tall images, transformers' default full-attention blocks,
the processor's pixel bounds), RoPE (a shift per packed image, float32 angles in a half-precision model), NaFlex's
default sequence length, the hub (TRANSFORMERS_OFFLINE, a refused token), tags (only a VLM's tower shards, a local
path before a tag, a tag's own image size) and smart_resize at its exact pixel bounds."""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from transformers import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

import vitkit
from hub_helpers import HubServer, build_hub_cache, isolate_hub
from interop_helpers import realistic_
from test_qwen_vl import assert_items_close, hf_outputs, pictures, saved
from vitkit.data import DataConfig, eval_transform, smart_resize
from vitkit.packing import pack_images

# ---------------------------------------------------------------- VLM towers


def test_dense_windows_on_a_tall_image_equal_hf(tmp_path: Path) -> None:
    """Grids of more window rows than window columns (18 x 10 patches: 3 x 2 windows of 8), run dense."""
    hf, path = saved(tmp_path, "qwen2.5")
    model = vitkit.load_pretrained(path)
    for grid in [(18, 10), (26, 12)]:
        batch = torch.stack(pictures(14, [grid] * 2))
        with torch.no_grad():
            dense = model.encode(batch)
        assert_items_close(dense.tokens, hf_outputs(hf, list(batch), 14)[0])


def test_transformers_default_full_attention_blocks_at_a_depth_they_name(tmp_path: Path) -> None:
    """transformers' default fullatt_block_indexes (7, 15, 23, 31) on a 7-block tower: block 7 is past the last, so
    every block is windowed, as in HF."""
    hf, path = saved(tmp_path, "qwen2.5", depth=7, fullatt_block_indexes=[7, 15, 23, 31])
    model = vitkit.load_pretrained(path)
    assert model.config.full_attention_blocks == ()
    items = pictures(14, [(16, 12), (10, 18)])
    with torch.no_grad():
        out = model.encode(model.pack(items))
    assert_items_close(out.tokens, hf_outputs(hf, items, 14)[0])


def test_the_processors_pixel_bounds_size_the_images_as_the_processor_does(tmp_path: Path) -> None:
    """preprocessor_config.json as transformers writes it (size: shortest_edge / longest_edge in pixels): the loaded
    tower sizes each image to the grid the processor gives it, below the minimum and above the maximum."""
    _, path = saved(tmp_path, "qwen2.5")
    processor = Qwen2VLImageProcessor(size={"shortest_edge": 200 * 200, "longest_edge": 300 * 300})
    processor.save_pretrained(path)
    model = vitkit.load_pretrained(path)
    data = DataConfig.of(model.config)
    assert (data.min_pixels, data.max_pixels) == (200 * 200, 300 * 300)
    transform = eval_transform(data, keep_aspect=True)
    for h, w in [(100, 120), (600, 800), (250, 260)]:
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        grid = processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()  # (1, rows, cols)
        assert tuple(transform(image).shape[1:]) == (grid[1] * 14, grid[2] * 14), (h, w)


# ---------------------------------------------------------------- RoPE


def test_each_packed_image_draws_its_own_rope_shift_in_training() -> None:
    model = realistic_(vitkit.create_model("vit_small_patch16_dinov3", depth=2, embed_dim=64, num_heads=4,
                                           dynamic_img_size=True, rope_shift=0.25))  # weights where angles matter
    image = torch.randn(3, 48, 64, generator=torch.Generator().manual_seed(0))
    batch = model.pack([image, image])
    with torch.no_grad():
        same = model.eval().forward_packed(batch, pre_logits=True)
        torch.manual_seed(0)
        drawn = model.train().forward_packed(batch, pre_logits=True)
    torch.testing.assert_close(same[0], same[1], rtol=0, atol=1e-5)  # eval: one image, one answer
    assert (drawn[0] - drawn[1]).abs().max() > 1e-3  # training: two shifts, two answers


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3", "eva02_tiny_patch14_224"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_rotates_by_the_float32_angles(name: str, dtype: torch.dtype) -> None:
    """Angles of cells far from the origin need float32 frequencies: in bf16 they would be off by ~1e-2 rad."""
    model = vitkit.create_model(name, depth=1, embed_dim=64, num_heads=4, dynamic_img_size=True)
    full = model.rope_for(24, 24)[0]
    half = model.to(dtype).rope_for(24, 24)[0]
    torch.testing.assert_close(half.cos.float(), full.cos.float(), rtol=0, atol=1e-6)
    torch.testing.assert_close(half.sin.float(), full.sin.float(), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- NaFlex


def test_the_default_sequence_holds_four_images_at_the_full_patch_budget_with_their_prefix_tokens() -> None:
    """A model with a class token and registers, sized by a NaFlex patch budget: four images of the whole budget
    fit in one sequence of the data config's default length."""
    model = vitkit.create_model("vit_small_patch16_224", depth=1, embed_dim=64, num_heads=4, reg_tokens=4,
                                dynamic_img_size=True, max_patches=64)
    data = DataConfig.of(model.config)
    images = [torch.randn(3, 16 * h, 16 * w) for h, w in [(8, 8), (4, 16), (16, 4), (2, 32)]]  # 64 patches each
    batch = pack_images(images, max_tokens=data.max_tokens(model.num_prefix_tokens), **model.packing_options())
    assert batch.num_sequences == 1


# ---------------------------------------------------------------- hub download

REPO = "vitkit-tests/vit"


def test_transformers_offline_switch_keeps_the_hub_offline(monkeypatch: pytest.MonkeyPatch, hub_server: HubServer,
                                                             tmp_path: Path) -> None:
    from vitkit.checkpoints.hub import hub_file

    hub_server.add(REPO, {"config.json": b"{}", "model.safetensors": b"weights"})
    build_hub_cache(tmp_path / "cache", REPO, {"config.json": b"{}"})
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"model\.safetensors of hf-hub:vitkit-tests/vit: offline"):
        hub_file(REPO, "model.safetensors")
    assert hub_file(REPO, "config.json").read_bytes() == b"{}"  # the cache still serves
    assert hub_server.seen == []  # and the server was never asked


class _RefusesTokens(BaseHTTPRequestHandler):
    """The hub's answer to a revoked or mistyped token: 401 'Invalid credentials in Authorization header'."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _refuse(self, body: bool) -> None:
        self.send_response(401)
        self.send_header("X-Error-Message", "Invalid credentials in Authorization header")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        if body:
            self.wfile.write(b"{}")

    def do_HEAD(self) -> None:
        self._refuse(body=False)

    def do_GET(self) -> None:
        self._refuse(body=True)


def test_a_refused_token_says_access_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vitkit.checkpoints.hub import hub_file, hub_listing

    isolate_hub(monkeypatch, tmp_path / "cache")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _RefusesTokens)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}")
        monkeypatch.setenv("HF_TOKEN", "hf_revoked")
        with pytest.raises(ValueError, match=r"^cannot fetch config\.json of hf-hub:vitkit-tests/vit: access refused "
                           r"\(HTTP 401\): set HF_TOKEN to a token that can read it"):
            hub_file(REPO, "config.json")
        with pytest.raises(ValueError, match=r"^cannot fetch hf-hub:vitkit-tests/vit: access refused \(HTTP 401\)"):
            hub_listing(REPO)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# ---------------------------------------------------------------- tags


def test_a_vlm_tag_fetches_its_index_and_only_the_shards_of_its_tower(hub_server: HubServer) -> None:
    from vitkit.checkpoints.tags import fetch_pretrained, get_pretrained

    tag = get_pretrained("qwen2_5_vl_vision_3b.instruct")
    shards = {"model-00001-of-00003.safetensors": {"model.language_model.embed_tokens.weight": torch.zeros(4, 2)},
              "model-00002-of-00003.safetensors": {"model.visual.patch_embed.proj.weight": torch.zeros(2, 2),
                                                   "model.language_model.norm.weight": torch.zeros(2)},
              "model-00003-of-00003.safetensors": {"lm_head.weight": torch.zeros(4, 2)}}
    index = {"weight_map": {key: name for name, part in shards.items() for key in part}}
    hub_server.add(tag.repo, {**{name: save(part) for name, part in shards.items()},
                          "model.safetensors.index.json": json.dumps(index).encode(), "README.md": b"# a VLM\n"})
    directory = fetch_pretrained(tag)
    assert sorted(hub_server.fetched()) == [f"{tag.repo}/model-00002-of-00003.safetensors",
                                        f"{tag.repo}/model.safetensors.index.json"]
    assert sorted(p.name for p in directory.iterdir()) == ["model-00002-of-00003.safetensors",
                                                          "model.safetensors.index.json"]


def test_a_local_path_named_like_a_tag_is_the_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vitkit.checkpoints.tags import pretrained_tag

    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert pretrained_tag(name).name == name  # nothing of that name here: the tag
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).mkdir()  # a model directory someone saved under the tag's name
    assert pretrained_tag(name) is None
    assert pretrained_tag(tmp_path / name) is None


def test_a_tag_of_another_image_size_builds_the_model_at_its_size() -> None:
    from vitkit.checkpoints.tags import WEIGHTS, Pretrained

    half = (0.5, 0.5, 0.5)
    tag = Pretrained("vit_tiny_patch16_224.at384", "someone/vit_tiny_384", WEIGHTS, "timm", "apache-2.0", half, half,
                     384, 1.0)
    assert tag.config().img_size == (384, 384)
    same = Pretrained("vit_tiny_patch16_224.at224", "someone/vit_tiny_224", WEIGHTS, "timm", "apache-2.0", half,
                      half, 224, 1.0)
    assert same.config().img_size == (224, 224)


# ---------------------------------------------------------------- smart_resize


def exactly_at_a_bound() -> list[tuple[int, int, int, int, int]]:
    """Sizes whose sides, rounded to the factor, give exactly max_pixels or exactly min_pixels (HF keeps them)."""
    cases = []
    for factor, (gh, gw) in itertools.product([28, 32], [(4, 4), (3, 5), (8, 2), (1, 7)]):
        bound = gh * gw * factor * factor
        for dh, dw in [(0, 0), (-3, 2), (5, -6), (factor // 2 - 1, -(factor // 2) + 1)]:
            h, w = gh * factor + dh, gw * factor + dw
            cases += [(h, w, factor, 1, bound), (h, w, factor, bound, 10**9)]
    return cases


@pytest.mark.parametrize(("height", "width", "factor", "min_pixels", "max_pixels"), exactly_at_a_bound())
def test_smart_resize_at_exactly_a_pixel_bound_is_transformers_size(height: int, width: int, factor: int,
                                                                   min_pixels: int, max_pixels: int) -> None:
    want = hf_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    assert smart_resize(height, width, factor, min_pixels, max_pixels) == want
