"""Google JAX .npz checkpoints (big_vision SigLIP / ViT, original vision_transformer) into vitkit.

No JAX here, so each test writes the .npz from a random timm model in the Flax layout, proves the file right by
loading it with timm's own .npz reader (`_load_weights`) into a fresh timm model, then loads it into vitkit and
compares outputs with that peer.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT
from timm.models.vision_transformer import _load_weights

import vitkit
from interop_helpers import assert_close, assert_parity, images, realistic_
from vitkit.checkpoints import load_checkpoint, read_state_dict

SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4, act_layer="gelu_tanh")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy().copy()


def _attention_arrays(qkv_w: torch.Tensor, qkv_b: torch.Tensor, proj_w: torch.Tensor, proj_b: torch.Tensor,
                      heads: int, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """torch q/k/v (stacked in qkv_w) and proj -> Flax per-head kernels (D, H, hd), biases (H, hd), out (H, hd, D)."""
    dim = proj_w.shape[0]
    out = {}
    for name, w, b in zip(names, qkv_w.chunk(len(names)), qkv_b.chunk(len(names)), strict=True):
        out[f"{name}/kernel"] = _np(w.T.reshape(dim, heads, -1))
        out[f"{name}/bias"] = _np(b.reshape(heads, -1))
    out["out/kernel"] = _np(proj_w.T.reshape(heads, -1, dim))
    out["out/bias"] = _np(proj_b)
    return out


def flax_arrays(model: TimmViT, *, original: bool = False, scanned: bool = False) -> dict[str, np.ndarray]:
    """A timm ViT's weights as big_vision writes them (`original`: google-research/vision_transformer names)."""
    sd, heads = model.state_dict(), model.blocks[0].attn.num_heads
    w: dict[str, np.ndarray] = {
        "embedding/kernel": _np(sd["patch_embed.proj.weight"].permute(2, 3, 1, 0)),
        "embedding/bias": _np(sd["patch_embed.proj.bias"]),
        "Transformer/encoder_norm/scale": _np(sd["norm.weight"]),
        "Transformer/encoder_norm/bias": _np(sd["norm.bias"]),
    }
    pos = "Transformer/posembed_input/pos_embedding" if original else "pos_embedding"
    w[pos] = _np(sd["pos_embed"])
    if "cls_token" in sd:
        w["cls"] = _np(sd["cls_token"])
    if "head.weight" in sd:
        w["head/kernel"], w["head/bias"] = _np(sd["head.weight"].T), _np(sd["head.bias"])
    attn, ln1, ln2, mlp = ("MultiHeadDotProductAttention_1", "LayerNorm_0", "LayerNorm_2", "MlpBlock_3") if original \
        else ("MultiHeadDotProductAttention_0", "LayerNorm_0", "LayerNorm_1", "MlpBlock_0")
    blocks: list[dict[str, np.ndarray]] = []
    for i in range(len(model.blocks)):
        b = f"blocks.{i}."
        block = {f"{ln1}/scale": _np(sd[b + "norm1.weight"]), f"{ln1}/bias": _np(sd[b + "norm1.bias"]),
                 f"{ln2}/scale": _np(sd[b + "norm2.weight"]), f"{ln2}/bias": _np(sd[b + "norm2.bias"])}
        mha = _attention_arrays(sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"], sd[b + "attn.proj.weight"],
                                sd[b + "attn.proj.bias"], heads, ("query", "key", "value"))
        block.update({f"{attn}/{k}": v for k, v in mha.items()})
        for r in range(2):
            block[f"{mlp}/Dense_{r}/kernel"] = _np(sd[f"{b}mlp.fc{r + 1}.weight"].T)
            block[f"{mlp}/Dense_{r}/bias"] = _np(sd[f"{b}mlp.fc{r + 1}.bias"])
        blocks.append(block)
    if scanned:
        w.update({f"Transformer/encoderblock/{k}": np.stack([b[k] for b in blocks]) for k in blocks[0]})
    else:
        w.update({f"Transformer/encoderblock_{i}/{k}": v for i, b in enumerate(blocks) for k, v in b.items()})
    if "attn_pool.latent" in sd:
        p = "MAPHead_0/"
        w[p + "probe"] = _np(sd["attn_pool.latent"])
        mha = _attention_arrays(torch.cat([sd["attn_pool.q.weight"], sd["attn_pool.kv.weight"]]),
                                torch.cat([sd["attn_pool.q.bias"], sd["attn_pool.kv.bias"]]),
                                sd["attn_pool.proj.weight"], sd["attn_pool.proj.bias"], heads,
                                ("query", "key", "value"))
        w.update({f"{p}MultiHeadDotProductAttention_0/{k}": v for k, v in mha.items()})
        w[p + "LayerNorm_0/scale"], w[p + "LayerNorm_0/bias"] = _np(sd["attn_pool.norm.weight"]), _np(
            sd["attn_pool.norm.bias"])
        for r in range(2):
            w[f"{p}MlpBlock_0/Dense_{r}/kernel"] = _np(sd[f"attn_pool.mlp.fc{r + 1}.weight"].T)
            w[f"{p}MlpBlock_0/Dense_{r}/bias"] = _np(sd[f"attn_pool.mlp.fc{r + 1}.bias"])
    return w


def write_npz(model: TimmViT, path: Path, prefix: str = "", extra: dict[str, np.ndarray] | None = None,
              **kwargs: bool) -> Path:
    arrays = {prefix + k: v for k, v in flax_arrays(model, **kwargs).items()}
    np.savez(path, **arrays, **(extra or {}))
    return path


def timm_reads(path: Path, like: TimmViT, **kwargs: object) -> TimmViT:
    """A fresh timm model of the same architecture loaded from `path` by timm's own .npz reader."""
    fresh = TimmViT(**kwargs)
    with torch.no_grad():
        _load_weights(fresh, str(path))
    x = images()
    with torch.no_grad():
        assert_close(fresh(x), like(x), atol=1e-6)  # the file holds exactly the model's weights
    return fresh.eval()


def compare(theirs: torch.nn.Module, mine: torch.nn.Module, x: torch.Tensor) -> None:
    """Features and outputs, fp32 and float64 (see `assert_parity`)."""
    assert_parity(mine.forward_features, theirs.forward_features, x, mine, theirs)
    assert_parity(mine, theirs, x, mine, theirs)


def test_siglip_image_tower_two_tower_npz(tmp_path: Path) -> None:
    """big_vision SigLIP: `params/img/` of a two-tower archive, MAP head, no class token, GELU-tanh, projection."""
    kwargs = dict(SMALL, class_token=False, global_pool="map", num_classes=48)
    theirs = realistic_(TimmViT(**kwargs))
    text = {"params/txt/Encoder_0/encoder_norm/scale": np.ones(8, np.float32), "params/t": np.ones(1, np.float32)}
    path = write_npz(theirs, tmp_path / "siglip.npz", prefix="params/img/", extra=text)
    theirs = timm_reads(path, theirs, **kwargs)
    loaded = load_checkpoint(path)
    assert loaded.source_format == "big_vision" and loaded.report.clean
    assert any("params/txt" in d or "outside 'params/img/'" in d for d in loaded.report.dropped)
    cfg = loaded.model.config
    assert (cfg.num_heads, cfg.global_pool, cfg.class_token, cfg.act_layer, cfg.num_classes) == (
        4, "map", False, "gelu_tanh", 48)
    compare(theirs, loaded.model, images())


@pytest.mark.parametrize("mutation", [{"act_layer": "gelu"}, {"norm_eps": 1e-5}])
def test_a_wrong_activation_or_eps_fails_the_check(tmp_path: Path, mutation: dict[str, object]) -> None:
    """Flax's `nn.gelu` is the tanh form and its LayerNorm eps 1e-6, as the .npz converter says: the same file
    loaded with exact GELU or eps 1e-5 fails the parity check."""
    kwargs = dict(SMALL, class_token=False, global_pool="map", num_classes=0)
    theirs = realistic_(TimmViT(**kwargs))
    mine = vitkit.load_pretrained(write_npz(theirs, tmp_path / "siglip.npz", prefix="params/img/"), **mutation)
    with pytest.raises(AssertionError):
        compare(theirs, mine, images())


def test_scanned_blocks(tmp_path: Path) -> None:
    """`nn.scan` checkpoints stack every block's arrays along a leading layer axis."""
    kwargs = dict(SMALL, class_token=False, global_pool="avg", fc_norm=False, num_classes=0)
    theirs = realistic_(TimmViT(**kwargs), seed=1)
    path = write_npz(theirs, tmp_path / "scanned.npz", prefix="params/", scanned=True)
    theirs = timm_reads(path, theirs, **kwargs)
    mine = vitkit.load_pretrained(path)
    assert mine.config.depth == 3 and mine.config.global_pool == "avg"
    compare(theirs, mine, images())


def test_original_vision_transformer_npz(tmp_path: Path) -> None:
    """google-research/vision_transformer: root keys, class token with a position, classifier head."""
    kwargs = dict(SMALL, num_classes=10)
    theirs = realistic_(TimmViT(**kwargs), seed=2)
    path = write_npz(theirs, tmp_path / "ViT-S_8.npz", original=True)
    theirs = timm_reads(path, theirs, **kwargs)
    mine = vitkit.load_pretrained(path)
    assert (mine.config.global_pool, mine.config.no_embed_class, mine.config.num_classes) == ("token", False, 10)
    compare(theirs, mine, images())


def test_big_vision_class_token_has_no_position(tmp_path: Path) -> None:
    """big_vision adds positions to the patches only and then prepends `cls`: timm's no_embed_class."""
    kwargs = dict(SMALL, no_embed_class=True, num_classes=7)
    theirs = realistic_(TimmViT(**kwargs), seed=3)
    path = write_npz(theirs, tmp_path / "vit_tok.npz", prefix="params/")
    theirs = timm_reads(path, theirs, **kwargs)
    mine = vitkit.load_pretrained(path)
    assert mine.config.no_embed_class and mine.config.global_pool == "token"
    compare(theirs, mine, images())


def test_npz_resampled_to_another_size_and_bfloat16(tmp_path: Path) -> None:
    kwargs = dict(SMALL, class_token=False, global_pool="map", num_classes=0)
    theirs = realistic_(TimmViT(**kwargs), seed=4)
    arrays = {f"params/img/{k}": v for k, v in flax_arrays(theirs).items()}
    # NumPy has no bfloat16: JAX's ml_dtypes arrays land in .npz files as 2-byte void
    bf16 = {k: torch.from_numpy(v).bfloat16().view(torch.int16).numpy().view("V2") for k, v in arrays.items()}
    np.savez(tmp_path / "bf16.npz", **bf16)
    sd = read_state_dict(tmp_path / "bf16.npz")
    assert sd["params/img/embedding/kernel"].dtype == torch.bfloat16
    torch.testing.assert_close(sd["params/img/pos_embedding"].float(),
                               torch.from_numpy(arrays["params/img/pos_embedding"]).bfloat16().float())
    mine = vitkit.load_pretrained(tmp_path / "bf16.npz", img_size=48)
    assert mine.pos_embed.shape[1] == 36 and mine(images(height=48, width=48)).shape == (2, 64)


def test_npz_convert_cli_to_timm(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vitkit.cli import app

    kwargs = dict(SMALL, class_token=False, global_pool="map", num_classes=0)
    theirs = realistic_(TimmViT(**kwargs))
    path = write_npz(theirs, tmp_path / "siglip.npz", prefix="params/img/")
    result = CliRunner().invoke(app, ["convert", str(path), str(tmp_path / "out"), "--to", "timm"])
    assert result.exit_code == 0, result.output
    assert "big_vision" in result.output
    back = TimmViT(**kwargs).eval()
    back.load_state_dict(read_state_dict(next((tmp_path / "out").glob("*.safetensors"))))
    compare(theirs, back, images())


def test_npz_errors_name_the_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", weights=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"other\.npz.*unrecognised checkpoint layout"):
        vitkit.load_pretrained(tmp_path / "other.npz")
    theirs = TimmViT(**dict(SMALL, num_classes=0))
    good = write_npz(theirs, tmp_path / "good.npz", prefix="params/")
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.npz is not a readable \.npz archive"):
        vitkit.load_pretrained(tmp_path / "cut.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(ValueError, match=r"single\.npz .*not an \.npz archive"):
        read_state_dict(tmp_path / "single.npz")
    np.savez(tmp_path / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"objects\.npz"):
        read_state_dict(tmp_path / "objects.npz")
    with zipfile.ZipFile(good) as archive:
        kept = [n for n in archive.namelist() if "encoderblock_1/MlpBlock_0/Dense_0/kernel" not in n]
        with zipfile.ZipFile(tmp_path / "missing.npz", "w") as out:
            for name in kept:
                out.writestr(name, archive.read(name))
    with pytest.raises(ValueError, match=r"missing\.npz.*Dense_0/kernel"):
        vitkit.load_pretrained(tmp_path / "missing.npz")
