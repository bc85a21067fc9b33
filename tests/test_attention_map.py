"""Attention maps: weights recorded from the math path whatever the backend, rollout, heat per pooling kind,
the PNG over the input image, and `vitkit attention-map`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import vitkit
from interop_helpers import images, randomize_
from vitkit.cli import app
from vitkit.explain import attention_map, attention_maps, attention_rollout, overlay, patch_heat, record_attention

ENV = {"COLUMNS": "250", "TTY_COMPATIBLE": "0", "FORCE_COLOR": None, "NO_COLOR": "1"}
TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=5)  # 16 patches, H=4


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


def vit(pool: str = "token", **overrides) -> vitkit.VisionTransformer:
    extra = {} if pool == "token" else {"class_token": False}
    return randomize_(vitkit.VisionTransformer(**{**TINY, "global_pool": pool, **extra, **overrides}))


def simple_vit(**overrides) -> vitkit.SimpleViT:
    return randomize_(vitkit.SimpleViT(**{**dict(image_size=16, patch_size=4, num_classes=5, dim=32, depth=2,
                                                 heads=4, mlp_dim=64, dim_head=8), **overrides}))


def picture(path, kind: str, size=(20, 12), mode="RGB"):
    """A test image file: 'noise' everywhere, or a 'square' of bright pixels top-left on black."""
    width, height = size
    rng = np.random.default_rng(0)
    channels = 3 if mode == "RGB" else 1
    if kind == "noise":
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    else:
        pixels = np.zeros((height, width, channels), dtype=np.uint8)
        pixels[: height // 2, : width // 2] = 255
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode).save(path)
    return path


# --- recording and rollout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_recorded_weights_are_each_blocks_softmax_whatever_the_backend(backend):
    model = vit(attention_type=backend, reg_tokens=1)  # 18 tokens, 4 heads
    x = images(2, 16, 16)
    with torch.no_grad():
        hidden = model.forward_hidden_states(x)
        expected_output = model(x)
        with record_attention(model) as record:
            output = model(x)
    torch.testing.assert_close(output, expected_output, rtol=0, atol=0)  # recording changes nothing
    assert len(record.blocks) == 2
    for i, block in enumerate(model.blocks):
        attn = block.attn
        qkv = block.norm1(hidden[i]) @ attn.qkv.weight.T + attn.qkv.bias  # (B, T, 3 * H * D)
        q, k, _ = qkv.reshape(2, 18, 3, 4, 8).permute(2, 0, 3, 1, 4)  # each (B, H, T, D)
        weights = ((q @ k.transpose(-1, -2)) / 8**0.5).softmax(dim=-1)
        assert record.blocks[i].shape == (2, 4, 18, 18)
        torch.testing.assert_close(record.blocks[i], weights, rtol=0, atol=1e-6)
    with torch.no_grad():
        model(x)
    assert len(record.blocks) == 2  # hooks gone after the block


def test_rollout_matches_a_step_by_step_reference():
    gen = torch.Generator().manual_seed(0)
    layers = [torch.rand(2, 3, 5, 5, generator=gen).softmax(dim=-1) for _ in range(3)]
    expected = np.stack([np.eye(5)] * 2)
    for weights in layers:
        attn = weights.double().mean(dim=1).numpy()
        attn = 0.5 * attn + 0.5 * np.eye(5)
        attn = attn / attn.sum(axis=-1, keepdims=True)
        expected = attn @ expected
    rollout = attention_rollout(layers)
    np.testing.assert_allclose(rollout.numpy(), expected, atol=1e-6)
    torch.testing.assert_close(rollout.sum(dim=-1), torch.ones(2, 5))
    np.testing.assert_allclose(attention_rollout(layers[:1], residual=False).numpy(),
                               layers[0].mean(dim=1).numpy(), atol=1e-7)
    with pytest.raises(ValueError, match="at least one layer"):
        attention_rollout([])


def test_heat_follows_how_each_head_reads_its_tokens():
    x = images(2, 16, 16)
    token = vit("token", reg_tokens=2)  # 3 prefix tokens
    with torch.no_grad(), record_attention(token) as record:
        token(x)
    last = record.blocks[-1].mean(dim=1)
    torch.testing.assert_close(patch_heat(token, record, "last"), last[:, 0, 3:])
    torch.testing.assert_close(patch_heat(token, record, "rollout"), attention_rollout(record.blocks)[:, 0, 3:])

    pooled = vit("map")
    with torch.no_grad(), record_attention(pooled) as record:
        pooled(x)
    assert record.pool.shape == (2, 4, 1, 16)
    latent = record.pool.mean(dim=(1, 2))
    torch.testing.assert_close(patch_heat(pooled, record, "last"), latent)
    torch.testing.assert_close(patch_heat(pooled, record, "rollout"),
                               torch.einsum("bn,bnt->bt", latent, attention_rollout(record.blocks)))

    mean = simple_vit()
    with torch.no_grad(), record_attention(mean) as record:
        mean(x)
    torch.testing.assert_close(patch_heat(mean, record, "last"), record.blocks[-1].mean(dim=1).mean(dim=1))


@pytest.mark.parametrize("make", [lambda: vit("token"), lambda: vit("map"), simple_vit], ids=["token", "map", "simple"])
@pytest.mark.parametrize("method", ["rollout", "last"])
def test_maps_are_a_patch_grid_in_unit_range_and_differ_between_images(make, method):
    model = make()
    maps = attention_maps(model, images(2, 16, 16), method=method)
    assert maps.heat.shape == (2, 4, 4) and maps.output.shape == (2, 5)
    assert maps.heat.min() >= 0 and maps.heat.max() <= 1
    assert torch.allclose(maps.heat.flatten(1).amax(1), torch.ones(2))
    assert not torch.allclose(maps.heat[0], maps.heat[1], atol=1e-3)


def test_maps_run_in_eval_mode_and_keep_the_models_mode():
    model = vit("token", drop_path_rate=0.9, drop_rate=0.5).train()
    x = images(1, 16, 16)
    first, second = attention_maps(model, x), attention_maps(model, x)
    torch.testing.assert_close(first.heat, second.heat, rtol=0, atol=0)  # no dropout or drop-path ran
    assert model.training


def test_map_is_the_same_on_every_backend():
    x = images(1, 16, 16)
    heats = [attention_maps(vit("map", attention_type=b), x).heat for b in ("math", "sdpa", "auto")]
    torch.testing.assert_close(heats[0], heats[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(heats[0], heats[2], rtol=0, atol=1e-5)


# --- pictures ---------------------------------------------------------------------------------------------------


def test_png_has_the_input_size_and_its_heat_differs_between_images(tmp_path):
    model = vit("token", attention_type="sdpa")
    a = attention_map(model, picture(tmp_path / "noise.png", "noise"), tmp_path / "a.png")
    b = attention_map(model, picture(tmp_path / "square.png", "square"), tmp_path / "b.png", method="last")
    for result in (a, b):
        with Image.open(result.path) as png:
            assert png.format == "PNG" and png.size == (20, 12) and png.mode == "RGB"
        assert result.heat.shape == (4, 4) and result.top_class in range(5) and 0 < result.probability <= 1
    c = attention_map(model, tmp_path / "square.png", tmp_path / "c.png")
    assert not torch.allclose(a.heat, c.heat, atol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png", "noise.png", "square.png"]


def test_size_option_and_greyscale_models(tmp_path):
    model = vit("avg", in_chans=1, pos_embed="sincos", mean=(0.5,), std=(0.5,))
    source = picture(tmp_path / "digit.png", "square", size=(8, 8), mode="L")
    result = attention_map(model, source, tmp_path / "big.png", size=(64, 96), alpha=0.6, colormap="jet")
    with Image.open(result.path) as png:
        assert png.size == (96, 64)
        pixels = np.asarray(png)
    assert pixels.std() > 0  # not a flat picture
    paired = attention_map(model, source, tmp_path / "pair.png", size=(64, 96), with_image=True)
    with Image.open(paired.path) as png, Image.open(source) as digit:
        assert png.size == (96 + 4 + 96, 64)
        left = np.asarray(png)[:, :96]
        np.testing.assert_array_equal(left, np.asarray(digit.convert("RGB").resize((96, 64), Image.Resampling.NEAREST)))
        right = np.asarray(overlay(digit, paired.heat, size=(64, 96)))
        np.testing.assert_array_equal(np.asarray(png)[:, 100:], right)


def test_overlay_blends_the_heat_into_the_image():
    image = Image.new("RGB", (4, 2), (0, 0, 0))
    heat = torch.tensor([[0.0, 1.0]])  # left cold, right hot
    plain = np.asarray(overlay(image, heat, alpha=0.0))
    assert (plain == 0).all()  # alpha 0: the image only
    full = np.asarray(overlay(image, heat, alpha=1.0, colormap="gray")).astype(int)
    assert full[:, 0].sum() < full[:, -1].sum()  # the hot side is brighter
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heat, alpha=1.5)
    with pytest.raises(ValueError, match="unknown colormap"):
        overlay(image, heat, colormap="no-such-map")


# --- command line -----------------------------------------------------------------------------------------------


def test_cli_attention_map_writes_the_png_and_reports(tmp_path):
    vitkit.save_pretrained(vit("map", attention_type="sdpa"), tmp_path / "model")
    source = picture(tmp_path / "in.png", "noise")
    out = tmp_path / "maps" / "out.png"
    result = invoke("attention-map", "--checkpoint", str(tmp_path / "model"), str(source), "--out", str(out),
                    "--method", "last", "--size", "40x30")
    assert result.exit_code == 0, result.output
    assert f"wrote: {out} (last, 4x4 patches)" in result.stdout and "predicted:" in result.stdout
    with Image.open(out) as png:
        assert png.size == (30, 40)
    result = invoke("attention-map", "--checkpoint", str(tmp_path / "model"), str(source), "--out",
                    str(tmp_path / "j.png"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["method"] == "rollout" and data["grid"] == [4, 4] and len(data["heat"]) == 4
    with Image.open(tmp_path / "j.png") as png:
        assert png.size == (20, 12)


def test_cli_attention_map_errors_are_one_line(tmp_path):
    vitkit.save_pretrained(simple_vit(), tmp_path / "model")
    source = picture(tmp_path / "in.png", "noise")
    (tmp_path / "model" / "model.safetensors").unlink()
    cases = [
        (("--checkpoint", str(tmp_path / "model"), str(source)), "missing model.safetensors"),
        (("--checkpoint", str(tmp_path / "model"), str(tmp_path / "absent.png")), "image not found"),
        (("--checkpoint", str(tmp_path / "model"), str(source), "--method", "grad"), "--method must be one of"),
        (("--checkpoint", str(tmp_path / "model"), str(source), "--size", "0"), "--size must be N or HxW"),
    ]
    for args, message in cases:
        result = invoke("attention-map", *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert message in result.stderr, (args, result.stderr)
