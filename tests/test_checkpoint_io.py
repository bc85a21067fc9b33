"""vitkit's own checkpoint directory and the safe file readers under it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.checkpoints import read_state_dict
from vitkit.runtime import atomic_path


@pytest.fixture
def small_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return vitkit.create_model("vit_digits", depth=2).eval()


def test_save_load_round_trip(tmp_path: Path, small_vit: torch.nn.Module) -> None:
    vitkit.save_pretrained(small_vit, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json", "model.safetensors"]
    loaded = vitkit.load_pretrained(tmp_path / "run")
    assert loaded.config == small_vit.config
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(loaded(x), small_vit(x), rtol=0, atol=0)


def test_simple_vit_round_trip(tmp_path: Path) -> None:
    model = vitkit.SimpleViT(image_size=16, patch_size=4, num_classes=3, dim=32, depth=1, heads=2, mlp_dim=64,
                             dim_head=16).eval()
    vitkit.save_pretrained(model, tmp_path)
    loaded = vitkit.load_pretrained(tmp_path)
    assert isinstance(loaded, vitkit.VisionTransformer) and loaded.config == model.config
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_weights_file_needs_a_model(tmp_path: Path, small_vit: torch.nn.Module) -> None:
    path = tmp_path / "weights.pt"
    torch.save(small_vit.state_dict(), path)
    with pytest.raises(ValueError, match=r"model="):
        vitkit.load_pretrained(path)
    into = vitkit.create_model("vit_digits", depth=2)
    vitkit.load_pretrained(path, model=into)
    torch.testing.assert_close(into.state_dict(), small_vit.state_dict())


def test_wrapped_training_checkpoint_is_unwrapped(tmp_path: Path, small_vit: torch.nn.Module) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": small_vit.state_dict(), "epoch": 3}, path)
    assert set(read_state_dict(path)) == set(small_vit.state_dict())


class NotATensor:
    """Something a weights-only unpickler must refuse to build."""


def test_untrusted_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "obj": NotATensor()}, path)
    with pytest.raises(ValueError, match=r"never runs untrusted pickles"):
        read_state_dict(path)


def test_truncated_and_empty_files(tmp_path: Path, small_vit: torch.nn.Module) -> None:
    vitkit.save_pretrained(small_vit, tmp_path / "good")
    data = (tmp_path / "good" / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.safetensors"):
        read_state_dict(tmp_path / "cut.safetensors")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_state_dict(tmp_path / "empty.pt")
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        vitkit.load_pretrained(tmp_path)


def test_mismatched_weights_report_every_problem(tmp_path: Path, small_vit: torch.nn.Module) -> None:
    vitkit.save_pretrained(small_vit, tmp_path)
    other = vitkit.create_model("vit_digits", depth=3, embed_dim=32)
    with pytest.raises(ValueError) as err:
        vitkit.load_pretrained(tmp_path, model=other)
    message = str(err.value)
    assert "missing" in message and "blocks.2" in message and "mismatched" in message


def test_unknown_config_field_is_named(tmp_path: Path, small_vit: torch.nn.Module) -> None:
    vitkit.save_pretrained(small_vit, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["wings"] = 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="wings"):
        vitkit.load_pretrained(tmp_path)


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("good")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_convert_state_dict_takes_source_format_as_load_pretrained_does(small_vit: torch.nn.Module) -> None:
    """One name for the layout: `source_format` (positional too); the old `source=` warns and still works."""
    weights, config = small_vit.state_dict(), small_vit.config
    by_keyword = vitkit.convert_state_dict(weights, source_format="timm", config=config)
    by_position = vitkit.convert_state_dict(weights, "timm", config=config)
    with pytest.warns(DeprecationWarning, match=r"source=.*deprecated.*source_format="):
        by_old_name = vitkit.convert_state_dict(weights, source="timm", config=config)
    for conversion in (by_position, by_old_name):
        assert (conversion.source_format, conversion.config) == (by_keyword.source_format, by_keyword.config)
        torch.testing.assert_close(conversion.state_dict, by_keyword.state_dict, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a hf-vit checkpoint"), pytest.warns(DeprecationWarning):
        vitkit.convert_state_dict(weights, source="hf-vit")  # honoured, not ignored
    with pytest.raises(TypeError, match=r"source_format='timm' and source='timm'; pass only source_format="):
        vitkit.convert_state_dict(weights, source_format="timm", source="timm")


def test_skip_leaves_the_models_own_values_for_the_keys_it_names(tmp_path: Path, small_vit: torch.nn.Module) -> None:
    vitkit.save_pretrained(small_vit, tmp_path / "run")  # 10 classes
    torch.manual_seed(1)
    four = vitkit.create_model("vit_digits", depth=2, num_classes=4)
    fresh_head = {k: v.clone() for k, v in four.state_dict().items() if k.startswith("head.")}
    with pytest.raises(ValueError, match="mismatched: head"):
        vitkit.load_pretrained(tmp_path / "run", model=four)
    loaded = vitkit.checkpoints.load_checkpoint(tmp_path / "run", model=four, skip="head")
    assert loaded.report.clean and any("head" in line and "skip" in line for line in loaded.report.dropped)
    for key, value in four.state_dict().items():
        want = fresh_head[key] if key.startswith("head.") else small_vit.state_dict()[key]
        assert torch.equal(value, want), key
    again = vitkit.load_pretrained(tmp_path / "run", skip=["head.*", "blocks.1.*"], num_classes=4)  # globs too
    assert not torch.equal(again.blocks[1].attn.qkv.weight, small_vit.blocks[1].attn.qkv.weight)
    assert torch.equal(again.blocks[0].attn.qkv.weight, small_vit.blocks[0].attn.qkv.weight)
    with pytest.raises(TypeError, match="skip must be key patterns"):
        vitkit.load_pretrained(tmp_path / "run", skip=[3])
