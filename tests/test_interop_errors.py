"""Clear errors, each naming the file and the problem: untrusted pickles, truncated files, a family forced with
the wrong source_format, missing keys, unknown layouts, fields the weights cannot show, offline hub ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as hf
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer as TimmViT

import vitkit
from vitkit.checkpoints import load_checkpoint

SMALL = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)


@pytest.fixture
def timm_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    save_file(dict(TimmViT(**SMALL, num_classes=3).state_dict()), str(tmp_path / "vit.safetensors"))
    return tmp_path / "vit.safetensors"


class Payload:
    """An object a weights-only unpickler must refuse to build."""


def test_pickle_that_is_not_weights_only(tmp_path: Path) -> None:
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil\.pth.*never runs untrusted pickles"):
        vitkit.load_pretrained(tmp_path / "evil.pth", num_heads=4)


def test_truncated_file(tmp_path: Path, timm_file: Path) -> None:
    data = timm_file.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"cut\.safetensors.*truncated or corrupt"):
        vitkit.load_pretrained(tmp_path / "cut.safetensors", num_heads=4)
    torch.save(TimmViT(**SMALL).state_dict(), tmp_path / "cut.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "cut.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cut\.pt.*truncated or corrupt"):
        vitkit.load_pretrained(tmp_path / "cut.pt", num_heads=4)


def test_other_family_forced_with_the_wrong_source_format(tmp_path: Path) -> None:
    hf.SiglipVisionModel(hf.SiglipVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                               intermediate_size=64, image_size=16, patch_size=8)
                         ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"model\.safetensors.*not a timm checkpoint.*look like hf-siglip"):
        vitkit.load_pretrained(tmp_path / "model.safetensors", source_format="timm", num_heads=2)
    with pytest.raises(ValueError, match=r"unknown source_format 'jax'"):
        vitkit.load_pretrained(tmp_path, source_format="jax")


def test_missing_keys_are_reported_together(tmp_path: Path, timm_file: Path) -> None:
    from safetensors.torch import load_file

    weights = load_file(str(timm_file))
    holes = ["blocks.1.mlp.fc2.bias", "blocks.1.mlp.fc2.weight", "blocks.1.norm2.weight"]
    for key in holes:
        del weights[key]
    weights["extra.thing"] = torch.zeros(2)
    save_file(weights, str(tmp_path / "holes.safetensors"))
    with pytest.raises(ValueError) as err:
        vitkit.load_pretrained(tmp_path / "holes.safetensors", num_heads=4)
    message = str(err.value)
    assert "holes.safetensors" in message and "3 missing" in message and "blocks.1.mlp.fc2.weight" in message
    assert "1 unexpected: extra.thing" in message
    with pytest.warns(UserWarning, match="3 missing"):
        loaded = load_checkpoint(tmp_path / "holes.safetensors", num_heads=4, strict=False)
    assert loaded.report.missing == holes


def test_shape_mismatch_against_a_given_model(timm_file: Path) -> None:
    expected = r"vit\.safetensors.*31 mismatched: .*attn\.qkv\.weight: checkpoint \(192, 64\) vs model \(96, 32\)"
    with pytest.raises(ValueError, match=expected):
        vitkit.load_pretrained(timm_file, model=vitkit.VisionTransformer(**{**SMALL, "embed_dim": 32}, num_classes=3))


def test_what_the_weights_cannot_show_is_asked_for(timm_file: Path) -> None:
    with pytest.raises(ValueError, match=r"vit\.safetensors.*num_heads.*pass num_heads=\.\.\..*model="):
        vitkit.load_pretrained(timm_file)
    model = vitkit.load_pretrained(timm_file, model=vitkit.VisionTransformer(**SMALL, num_classes=3))
    assert model.config.num_heads == 4


def test_unknown_layout_and_missing_paths(tmp_path: Path) -> None:
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(ValueError, match=r"odd\.safetensors.*unrecognised checkpoint layout.*encoder\.weight"):
        vitkit.load_pretrained(tmp_path / "odd.safetensors")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        vitkit.load_pretrained(tmp_path / "nowhere")
    (tmp_path / "weights.npy").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"weights\.npy.*unknown weights format"):
        vitkit.load_pretrained(tmp_path / "weights.npy")


def test_hub_id_offline_fails_at_once_naming_the_local_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"hf-hub:vitkit-tests/absent.*offline.*load_pretrained\('DIR'\)"):
        vitkit.load_pretrained("hf-hub:vitkit-tests/absent")
