"""2D RoPE towers: DINOv3, EVA-02 and RoPE-Mixed give timm's and Hugging Face's numbers, at their native size and
at any other, packed or not, on every CPU kernel; the rotation's base, coordinates and layout each matter.

Every registered name is built at reduced depth and width (2 blocks, 64 wide, 4 heads) with its real patch, image
size, RoPE variant, head, pool, norm and MLP settings, on weights at a trained model's magnitudes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.eva import checkpoint_filter_fn
from transformers import DINOv3ViTConfig, DINOv3ViTModel

import vitkit
from interop_helpers import assert_close, realistic_
from vitkit.layers import ROPES, rope
from vitkit.models import get_config

ATOL = 1e-5  # fp32, as the issue asks; timm's own float64 rounding of RoPE tables differs per variant
SMALL: dict[str, Any] = dict(depth=2, embed_dim=64, num_heads=4)
# vitkit name == timm name for each of these (timm/models/eva.py).
ROPE_PEERS = (
    "vit_tiny_patch16_dinov3_qkvb", "vit_small_patch16_dinov3", "vit_small_patch16_dinov3_qkvb",
    "vit_small_plus_patch16_dinov3", "vit_small_plus_patch16_dinov3_qkvb", "vit_base_patch16_dinov3",
    "vit_base_patch16_dinov3_qkvb", "vit_large_patch16_dinov3", "vit_large_patch16_dinov3_qkvb",
    "vit_huge_plus_patch16_dinov3", "vit_huge_plus_patch16_dinov3_qkvb", "vit_7b_patch16_dinov3",
    "eva02_tiny_patch14_224", "eva02_small_patch14_224", "eva02_base_patch14_224", "eva02_large_patch14_224",
    "vit_small_patch16_rope_mixed_224", "vit_base_patch16_rope_mixed_224", "vit_large_patch16_rope_mixed_224",
)


def small_overrides(name: str) -> dict[str, Any]:
    """SMALL in vitkit's terms: a packed SwiGLU states its fc1 width (gate + value) outright."""
    config = get_config(name)
    packed = config.mlp_layer == "swiglu_packed"
    return {**SMALL, **({"mlp_hidden_dim": 2 * int(64 * config.mlp_ratio)} if packed else {})}


def pair(name: str, *, dynamic: bool = False, timm_kwargs: dict[str, Any] | None = None,
         **overrides: Any) -> tuple[torch.nn.Module, vitkit.VisionTransformer]:
    """timm's `name` at SMALL size with realistic weights, and vitkit's with those weights converted."""
    extra = {"dynamic_img_size": True} if dynamic else {}
    theirs = realistic_(timm.create_model(name, **SMALL, **extra, **(timm_kwargs or {})))
    mine = vitkit.create_model(name, **small_overrides(name), **extra, weight_init="skip", **overrides).eval()
    converted = vitkit.convert_state_dict(theirs.state_dict(), config=mine.config)
    assert converted.source_format == "timm-eva"
    mine.load_state_dict(converted.state_dict)
    return theirs, mine


def images(height: int, width: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def assert_same(theirs: torch.nn.Module, mine: vitkit.VisionTransformer, x: torch.Tensor) -> None:
    """Tokens (prefix tokens included) and the pooled output agree within ATOL."""
    with torch.no_grad():
        assert_close(mine.forward_features(x), theirs.forward_features(x), ATOL)
        assert_close(mine(x), theirs(x), ATOL)


def other_size(mine: vitkit.VisionTransformer) -> tuple[int, int]:
    """A non-square size of a few patches: 3 x 5 cells."""
    ph, pw = mine.config.patch_size
    return 3 * ph, 5 * pw


@pytest.mark.parametrize("name", ROPE_PEERS)
def test_registered_names_give_timm_outputs_at_the_native_size(name: str) -> None:
    theirs, mine = pair(name)
    cfg = theirs.pretrained_cfg
    assert (mine.config.mean, mine.config.std, mine.config.crop_pct) == (cfg["mean"], cfg["std"], cfg["crop_pct"])
    assert mine.config.img_size == cfg["input_size"][1:] and mine.config.interpolation == cfg["interpolation"]
    assert (mine.num_classes, mine.global_pool, mine.num_prefix_tokens) == (
        theirs.num_classes, theirs.global_pool, theirs.num_prefix_tokens)
    assert_same(theirs, mine, images(*mine.config.img_size))


@pytest.mark.parametrize("name", ROPE_PEERS)
def test_registered_names_give_timm_outputs_at_a_non_square_size(name: str) -> None:
    theirs, mine = pair(name, dynamic=True)
    assert_same(theirs, mine, images(*other_size(mine)))


def rope_mutations() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, config change, ROPES change): each alone must break parity."""
    return [
        ("vit_small_patch16_dinov3", {"rope_theta": 10000.0}, {}),
        ("vit_small_patch16_dinov3", {"rope_indexing": "xy"}, {}),
        ("vit_small_patch16_dinov3", {}, {"coordinate": rope.cell_index}),  # cells, not centres normalised
        ("vit_small_patch16_dinov3", {}, {"half": False}),
        ("eva02_base_patch14_224", {"rope_theta": 100.0}, {}),
        ("eva02_base_patch14_224", {"rope_grid": None}, {}),  # no rescaling to the 16 x 16 reference grid
        ("eva02_base_patch14_224", {}, {"coordinate": rope.centred}),
        ("vit_small_patch16_rope_mixed_224", {"rope_indexing": "ij"}, {}),
    ]


@pytest.mark.parametrize(("name", "change", "variant_change"), rope_mutations())
def test_a_wrong_base_coordinate_rule_or_layout_fails_the_check(
        name: str, change: dict[str, Any], variant_change: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    variant = get_config(name).rope
    monkeypatch.setitem(ROPES, variant, dataclasses.replace(ROPES[variant], **variant_change))
    theirs, mine = pair(name, dynamic=True, **change)
    with pytest.raises(AssertionError):
        assert_same(theirs, mine, images(*other_size(mine)))


def test_timm_checkpoint_files_load_strict_and_detect_the_layout(tmp_path: Path) -> None:
    for name in ("vit_small_patch16_dinov3_qkvb", "eva02_base_patch14_224", "vit_base_patch16_rope_mixed_224"):
        theirs = realistic_(timm.create_model(name, **SMALL))
        save_file(theirs.state_dict(), str(tmp_path / f"{name}.safetensors"))
        mine = vitkit.create_model(name, **small_overrides(name)).eval()
        loaded = vitkit.checkpoints.load_checkpoint(tmp_path / f"{name}.safetensors", model=mine)
        assert loaded.source_format == "timm-eva" and loaded.report.clean
        assert_same(theirs, mine, images(*mine.config.img_size))


# -- Hugging Face DINOv3ViTModel and Meta's original layout ----------------------------------------------------------


def hf_dinov3(tmp_path: Path, **config: Any) -> tuple[DINOv3ViTModel, Path]:
    base = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_register_tokens=4, image_size=64, patch_size=16, rope_theta=50.0)
    model = realistic_(DINOv3ViTModel(DINOv3ViTConfig(**{**base, **config})))
    model.save_pretrained(tmp_path / "hf")
    return model, tmp_path / "hf"


@pytest.mark.parametrize("config", [{}, {"use_gated_mlp": True, "hidden_act": "silu"}, {"key_bias": True},
                                    {"query_bias": False, "value_bias": False}])
def test_hf_dinov3_directories_load_with_its_outputs(tmp_path: Path, config: dict[str, Any]) -> None:
    theirs, path = hf_dinov3(tmp_path, **config)
    loaded = vitkit.checkpoints.load_checkpoint(path)
    mine = loaded.model
    assert loaded.source_format == "hf-dinov3" and loaded.report.clean
    assert any("mask_token" in line for line in loaded.report.dropped)
    assert (mine.config.rope, mine.config.rope_theta, mine.config.rope_rescale) == ("dinov3", 50.0, 2.0)
    for size in ((64, 64), (48, 80)):
        x = images(*size)
        with torch.no_grad():
            out = theirs(pixel_values=x)
            assert_close(mine.forward_features(x), out.last_hidden_state, ATOL)
            assert_close(mine.forward_head(mine.forward_features(x), pre_logits=True), out.pooler_output, ATOL)


def to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm DINOv3 state dict in Meta's own names: storage tokens, ls gammas, one qkv bias whose key part is
    masked (non-zero here, so a model that used it would differ), w1/w2/w3 SwiGLU, and pretraining-only keys."""
    out: dict[str, torch.Tensor] = {"mask_token": torch.randn(1, 64), "rope_embed.periods": torch.ones(4)}
    renames = [("gamma_1", "ls1.gamma"), ("gamma_2", "ls2.gamma"), ("reg_token", "storage_tokens")]
    if any(".mlp.fc1_g." in key for key in state_dict):  # SwiGLU: w1 gate, w2 value, w3 out
        renames += [(".mlp.fc1_g.", ".mlp.w1."), (".mlp.fc1_x.", ".mlp.w2."), (".mlp.fc2.", ".mlp.w3.")]
    for key, value in state_dict.items():
        if key.endswith("attn.v_bias"):
            continue
        if key.endswith("attn.q_bias"):
            v = state_dict[key.replace("q_bias", "v_bias")]
            out[key.replace("q_bias", "qkv.bias")] = torch.cat([value, torch.randn_like(value), v])
            out[key.replace("q_bias", "qkv.bias_mask")] = torch.cat([torch.ones_like(value), torch.zeros_like(v),
                                                                     torch.ones_like(v)])
            continue
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3_qkvb", "vit_small_plus_patch16_dinov3_qkvb"])
def test_meta_original_dinov3_layout_loads_as_timm_reads_it(tmp_path: Path, name: str) -> None:
    source = realistic_(timm.create_model(name, **SMALL))
    original = to_original(source.state_dict())
    save_file(original, str(tmp_path / "dinov3.safetensors"))
    theirs = timm.create_model(name, **SMALL).eval()
    theirs.load_state_dict(checkpoint_filter_fn(dict(original), theirs))
    loaded = vitkit.checkpoints.load_checkpoint(tmp_path / "dinov3.safetensors", num_heads=4, img_size=256)
    mine = loaded.model
    assert loaded.source_format == "dinov3" and loaded.report.clean and not mine.config.key_bias
    x = images(48, 80)
    with torch.no_grad():
        assert_close(mine.forward_features(x), theirs.forward_features(x), ATOL)
        assert_close(mine.forward_head(mine.forward_features(x), pre_logits=True), theirs.forward_features(x)[:, 0],
                     ATOL)  # DINOv3's own feature: the class token after the final norm


# -- packed, every kernel, training-time augmentation ----------------------------------------------------------------

PACKED_NAMES = ("vit_small_patch16_dinov3_qkvb", "eva02_base_patch14_224", "vit_small_patch16_rope_mixed_224")


@pytest.mark.parametrize("name", PACKED_NAMES)
@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_packed_images_of_mixed_sizes_equal_each_image_alone(name: str, backend: str) -> None:
    mine = realistic_(vitkit.create_model(name, **small_overrides(name), dynamic_img_size=True))
    mine.set_attention(backend)
    ph, pw = mine.config.patch_size
    cells = [(4, 4), (2, 5), (3, 1), (5, 3), (1, 1), (6, 2)]
    shots = [torch.randn(3, h * ph, w * pw, generator=torch.Generator().manual_seed(i)) for i, (h, w) in
             enumerate(cells)]
    batch = mine.pack(shots, max_tokens=40)
    assert 1 < batch.num_sequences < len(shots)
    with torch.no_grad():
        pooled, tokens = mine.forward_packed(batch, pre_logits=True, return_tokens=True)
        for image, row, token in zip(shots, pooled, tokens, strict=True):
            alone = mine.forward_features(image[None])
            assert_close(token, alone[0], ATOL)
            assert_close(row, mine.forward_head(alone, pre_logits=True)[0], ATOL)


@pytest.mark.parametrize("backend", ["sdpa", "math", "sdpa:math", "sdpa:flash",
                                     pytest.param("flex", marks=pytest.mark.slow)])
def test_every_cpu_kernel_gives_the_math_result(backend: str) -> None:
    _, mine = pair("vit_small_patch16_dinov3_qkvb")
    x = images(*mine.config.img_size)
    with torch.no_grad():
        want = mine.forward_features(x)
        mine.set_attention(backend)
        assert_close(mine.forward_features(x), want, ATOL)


def test_dinov3_coordinate_augmentations_run_in_training_only_and_draw_as_timm() -> None:
    augs = dict(rope_shift_coords=0.25, rope_jitter_coords=1.5, rope_rescale_coords=2.0)
    theirs, mine = pair("vit_small_patch16_dinov3", dynamic=True, timm_kwargs=augs,
                        rope_shift=0.25, rope_jitter=1.5, rope_rescale=2.0)
    plain = vitkit.create_model("vit_small_patch16_dinov3", **SMALL, dynamic_img_size=True).eval()
    plain.load_state_dict(mine.state_dict())
    x = images(48, 80)
    assert_same(theirs, mine, x)  # eval: no augmentation
    with torch.no_grad():
        assert_close(mine(x), plain(x), 0.0)
        theirs.train(), mine.train()
        torch.manual_seed(7)
        want = theirs.forward_features(x)
        torch.manual_seed(7)
        got = mine.forward_features(x)
        assert_close(got, want, ATOL)  # the same draws, in the same order, give the same rotation
        assert not torch.allclose(got, mine.forward_features(x), atol=1e-3)  # and a new call draws anew


def test_rope_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="rope must be one of"):
        vitkit.create_model("vit_small_patch16_dinov3", rope="2d")
    with pytest.raises(ValueError, match="divisible by 4"):
        vitkit.create_model("vit_small_patch16_dinov3", embed_dim=60, num_heads=6)
    with pytest.raises(ValueError, match="rope_jitter must be >= 1"):
        vitkit.create_model("vit_small_patch16_dinov3", rope_jitter=0.5)
    model = vitkit.create_model("vit_small_patch16_dinov3", **SMALL)
    with pytest.raises(ValueError, match="rope_for"):
        model.forward_blocks(model.embed(images(64, 64)))


@pytest.mark.slow
def test_train_and_embed_a_dinov3_model_with_packing(tmp_path: Path) -> None:
    from test_packing_train import invoke, mixed_folder

    data = mixed_folder(tmp_path / "mixed")
    tiny = ["--set", "depth=1", "--set", "embed_dim=32", "--set", "num_heads=2"]
    result = invoke("train", "--model", "vit_small_patch16_dinov3", *tiny, "--img-size", "32", "--data", str(data),
                    "--val-split", "0.25", "--epochs", "1", "--batch-size", "6", "--packing", "--max-tokens", "24",
                    "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    result = invoke("embed", "--checkpoint", str(tmp_path / "run"), "--data", str(data), "--packing",
                    "--max-tokens", "512", "--out", str(tmp_path / "emb"))
    assert result.exit_code == 0, result.output
    rows, index = vitkit.load_embeddings(tmp_path / "emb")
    model = vitkit.load_pretrained(tmp_path / "run")
    assert model.config.rope == "dinov3" and rows.shape == (len(index.paths), 32)
    # many images to a sequence there, one here: each image's rotation is its own, so the rows are the same
    alone = vitkit.embed(model, data, packing=True, max_tokens=20, batch_size=4)
    assert_close(rows, alone, 1e-5)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    _, plain = pair("vit_small_patch16_dinov3_qkvb", dynamic=True)
    recomputed = vitkit.create_model("vit_small_patch16_dinov3_qkvb", **SMALL, dynamic_img_size=True)
    recomputed.load_state_dict(plain.state_dict())
    recomputed.set_grad_checkpointing(True)
    x = images(48, 80)
    for model in (plain.train(), recomputed.train()):
        model(x).square().sum().backward()
    for p, q in zip(plain.parameters(), recomputed.parameters(), strict=True):
        assert_close(q.grad, p.grad, 1e-5)


def test_dinov3_exports_to_onnx_and_torch_export(tmp_path: Path) -> None:
    from vitkit.deploy import export_onnx, export_program

    _, mine = pair("vit_small_patch16_dinov3_qkvb")
    assert export_onnx(mine, tmp_path / "dinov3.onnx").check.passed  # onnxruntime vs PyTorch, batches 1 and 3
    assert export_program(mine, tmp_path / "dinov3.pt2").check.passed


@pytest.mark.slow
def test_dinov3_compiles() -> None:
    _, mine = pair("vit_small_patch16_dinov3_qkvb", dynamic=True)
    x = images(48, 80)
    with torch.no_grad():
        assert_close(torch.compile(mine)(x), mine(x), 1e-5)
