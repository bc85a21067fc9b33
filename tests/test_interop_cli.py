"""`vitkit convert` and `vitkit models --pretrained-formats`, driven in-process through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers as hf
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer as TimmViT
from typer.testing import CliRunner

import vitkit
from interop_helpers import assert_parity, images, realistic_
from vitkit.checkpoints import FORMATS
from vitkit.cli import app

ENV = {"COLUMNS": "250", "TTY_COMPATIBLE": "0", "FORCE_COLOR": None, "NO_COLOR": "1"}


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def hf_siglip_dir(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    theirs = realistic_(hf.SiglipVisionModel(hf.SiglipVisionConfig(hidden_size=64, num_hidden_layers=2,
                                                                   num_attention_heads=4, intermediate_size=128,
                                                                   image_size=32, patch_size=8)))
    theirs.save_pretrained(tmp_path / "hf")
    return theirs, tmp_path / "hf"


def test_convert_hf_to_vitkit_prints_format_config_and_keys(tmp_path: Path) -> None:
    theirs, source = hf_siglip_dir(tmp_path)
    result = invoke("convert", source, tmp_path / "out")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("format: hf-siglip (Hugging Face SiglipVisionModel")
    config = json.loads(next(line for line in lines if line.startswith("config: "))[len("config: "):])
    assert (config["global_pool"], config["act_layer"], config["num_heads"]) == ("map", "gelu_tanh", 4)
    assert "keys: all keys matched" in lines
    model = vitkit.load_pretrained(tmp_path / "out")
    assert_parity(model, lambda x: theirs(x).pooler_output, images(), model, theirs)


def test_convert_timm_file_to_hf_with_options_and_json(tmp_path: Path) -> None:
    theirs = realistic_(TimmViT(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=3))
    save_file(dict(theirs.state_dict()), str(tmp_path / "vit.safetensors"))
    result = invoke("convert", tmp_path / "vit.safetensors", tmp_path / "hf", "--to", "hf", "--num-heads", "4",
                    "--set", "norm_eps=1e-6", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["format"] == "timm" and "act_layer" in report["assumed"] and report["missing"] == []
    exported = hf.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    assert_parity(lambda x: exported(x).logits, theirs, images(), exported, theirs)


def test_convert_resamples_with_img_size_and_lists_dropped_keys(tmp_path: Path) -> None:
    theirs = realistic_(hf.ViTModel(hf.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                 intermediate_size=128, image_size=32, patch_size=8)))
    theirs.save_pretrained(tmp_path / "hf")
    result = invoke("convert", tmp_path / "hf", tmp_path / "out", "--img-size", "48x64")
    assert result.exit_code == 0, result.output
    assert any(line.startswith("dropped: pooler.dense") for line in result.stdout.splitlines())
    assert vitkit.load_pretrained(tmp_path / "out").pos_embed.shape == (1, 1 + 6 * 8, 64)


def test_convert_errors_are_one_line(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_file(dict(TimmViT(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4).state_dict()),
              str(tmp_path / "vit.safetensors"))
    result = invoke("convert", tmp_path / "vit.safetensors", tmp_path / "out")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "vit.safetensors" in line and "num_heads" in line
    bad = invoke("convert", tmp_path / "vit.safetensors", tmp_path / "out", "--img-size", "big")
    assert bad.exit_code == 1 and "--img-size" in bad.stderr
    assert not (tmp_path / "out").exists()


def test_models_pretrained_formats() -> None:
    table = invoke("models", "--pretrained-formats")
    assert table.exit_code == 0, table.output
    assert all(name in table.stdout for name in FORMATS)
    listed = json.loads(invoke("models", "--pretrained-formats", "--json").stdout)
    assert [row["name"] for row in listed] == list(FORMATS)
