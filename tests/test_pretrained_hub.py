"""Published weights from the hub, end to end against the local stand-in hub (tests/hub_helpers.py): a tag's files
download into the real cache layout and load into the model the tag describes, then load again offline; whole
vision-language models bring only the shards that hold their vision tower (DeepSeek-VL2's real key names, Qwen-VL)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save
from timm.models._hub import save_for_hf

import vitkit
from hub_helpers import HubServer, isolate_hub
from interop_helpers import assert_close, images, realistic_
from test_qwen_vl import hf_outputs, hf_tower, photo_folder, pictures

TAG = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"


def go_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")  # nothing listens there
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def timm_repo(tmp_path: Path, name: str, **kwargs: object) -> tuple[torch.nn.Module, dict[str, bytes]]:
    model = realistic_(timm.create_model(name, pretrained=False, **kwargs)).eval()
    save_for_hf(model, tmp_path / name, safe_serialization=True)  # model.safetensors + timm's config.json
    return model, {p.name: p.read_bytes() for p in (tmp_path / name).iterdir()}


def test_pretrained_true_downloads_the_tag_and_loads_it_offline_after(monkeypatch: pytest.MonkeyPatch,
                                                                        hub_server: HubServer, tmp_path: Path) -> None:
    theirs, files = timm_repo(tmp_path, "vit_tiny_patch16_224")
    hub_server.add(f"timm/{TAG}", files | {"pytorch_model.bin": b"not fetched", "README.md": b"# tiny\n"})
    x = images(height=224, width=224)
    mine = vitkit.create_model(TAG, pretrained=True)
    assert not mine.training and mine.config.crop_pct == 0.9 and mine.num_classes == 1000
    with torch.no_grad():
        assert_close(mine(x), theirs(x))
    assert hub_server.fetched() == [f"timm/{TAG}/model.safetensors"]  # the tag states the rest
    go_offline(monkeypatch)
    with torch.no_grad():
        assert_close(vitkit.create_model("vit_tiny_patch16_224", pretrained=True)(x), theirs(x))  # the default tag
        assert_close(vitkit.load_pretrained(TAG)(x), theirs(x))  # the tag as a load_pretrained source
        fresh_head = vitkit.create_model(TAG, pretrained=True, num_classes=7)
        assert_close(fresh_head.forward_features(x), theirs.forward_features(x))
    assert fresh_head.num_classes == 7


def test_offline_without_the_files_says_which_and_how(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_hub(monkeypatch, tmp_path / "cache")
    go_offline(monkeypatch)
    with pytest.raises(ValueError, match=rf"timm/{TAG}.*offline.*hf download timm/{TAG}"):
        vitkit.create_model(TAG, pretrained=True)


def test_vitkit_embed_takes_a_tag(monkeypatch: pytest.MonkeyPatch, hub_server: HubServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vitkit.cli import app

    _, files = timm_repo(tmp_path, "vit_tiny_patch16_224")
    hub_server.add(f"timm/{TAG}", files)
    folder = photo_folder(tmp_path / "photos")
    result = CliRunner().invoke(app, ["embed", "--pretrained", TAG, "--data", str(folder), "--out",
                                      str(tmp_path / "emb")], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    rows, _ = vitkit.load_embeddings(tmp_path / "emb")
    assert rows.shape[0] == 3
    config = json.loads((tmp_path / "emb" / "embed_config.json").read_text())
    assert rows.shape[1] == 192 and config["model"]["source"].startswith(TAG)


def deepseek_vl2_files(tmp_path: Path) -> tuple[torch.nn.Module, dict[str, bytes], dict[str, str]]:
    """A small DeepSeek-VL2 checkpoint with its real key names: the SigLIP tower under `vision.`, the projector, the
    language model and the tile separators, in two shards (the tower alone in the second), with an index and a
    config.json stating the tower as DeepSeek-VL2's does."""
    tower = realistic_(timm.create_model("vit_so400m_patch14_siglip_384", pretrained=False, img_size=56,
                                         embed_dim=64, depth=2, num_heads=4, mlp_ratio=3.7362)).eval()
    language = {"projector.layers.0.weight": torch.randn(32, 256), "projector.layers.0.bias": torch.randn(32),
                "image_newline": torch.randn(32), "view_seperator": torch.randn(32),
                "language.model.embed_tokens.weight": torch.randn(100, 32),
                "language.model.layers.0.self_attn.q_proj.weight": torch.randn(32, 32),
                "language.lm_head.weight": torch.randn(100, 32)}
    vision = {f"vision.{k}": v.contiguous() for k, v in tower.state_dict().items()}
    shards = {"model-00001-of-00002.safetensors": language, "model-00002-of-00002.safetensors": vision}
    index = {"metadata": {"total_size": 0},
             "weight_map": {key: name for name, part in shards.items() for key in part}}
    config = {"model_type": "deepseek_vl_v2", "vision_config": {
        "model_type": "vision", "model_name": "siglip_so400m_patch14_384", "image_size": 56, "patch_size": 14,
        "width": 64, "layers": 2, "heads": 4, "mlp_ratio": 3.7362, "global_pool": "map", "ignore_head": True,
        "class_token": False, "num_classes": 0, "select_layer": -1}, "language_config": {"hidden_size": 32}}
    files = {name: save(part) for name, part in shards.items()}
    files |= {"model.safetensors.index.json": json.dumps(index).encode(), "config.json": json.dumps(config).encode()}
    return tower, files, index["weight_map"]


def test_deepseek_vl2_tower_comes_from_its_own_shards(monkeypatch: pytest.MonkeyPatch, hub_server: HubServer,
                                                       tmp_path: Path) -> None:
    tower, files, _ = deepseek_vl2_files(tmp_path)
    hub_server.add("deepseek-ai/deepseek-vl2-tiny", files | {"README.md": b"# DeepSeek-VL2\n"})
    model = vitkit.load_pretrained("hf-hub:deepseek-ai/deepseek-vl2-tiny")
    fetched = sorted(hub_server.fetched())
    assert "deepseek-ai/deepseek-vl2-tiny/model-00001-of-00002.safetensors" not in fetched  # the language model's
    assert "deepseek-ai/deepseek-vl2-tiny/model-00002-of-00002.safetensors" in fetched
    assert model.ignore_head and model.config.img_size == (56, 56) and model.config.global_pool == "map"
    x = images(height=56, width=56)
    with torch.no_grad():
        assert_close(model(x), tower.forward_features(x))  # ignore_head: the tokens DeepSeek-VL2 hands on
    loaded = vitkit.checkpoints.load_checkpoint("hf-hub:deepseek-ai/deepseek-vl2-tiny")
    assert loaded.source_format == "deepseek-vl2"
    assert any("language model" in line for line in loaded.report.dropped)


def test_qwen_vl_tower_from_the_hub_fetches_only_its_shards(hub_server: HubServer) -> None:
    hf = hf_tower("qwen2.5")
    vision = {f"model.visual.{k}": v.contiguous() for k, v in hf.state_dict().items()}
    language = {"model.language_model.embed_tokens.weight": torch.randn(50, 8), "lm_head.weight": torch.randn(50, 8)}
    shards = {"model-00001-of-00003.safetensors": language, "model-00002-of-00003.safetensors": vision,
              "model-00003-of-00003.safetensors": {"model.language_model.norm.weight": torch.randn(8)}}
    index = {"weight_map": {key: name for name, part in shards.items() for key in part}}
    config = {"model_type": "qwen2_5_vl", "vision_config": hf.config.to_dict()}
    files = {n: save(p) for n, p in shards.items()}
    hub_server.add("Qwen/tiny-vl", {**files, "config.json": json.dumps(config).encode(),
                                    "model.safetensors.index.json": json.dumps(index).encode()})
    model = vitkit.load_pretrained("hf-hub:Qwen/tiny-vl")
    weights = [f for f in hub_server.fetched() if f.endswith(".safetensors")]
    assert weights == ["Qwen/tiny-vl/model-00002-of-00003.safetensors"]
    items = pictures(14)
    with torch.no_grad():
        out = model.encode(model.pack(items))
    for mine, theirs in zip(out.tokens, hf_outputs(hf, items, 14)[0], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0.0, atol=1e-5)


def test_a_hub_cache_built_by_hand_loads_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A cache in huggingface_hub's layout (blobs, refs/main, snapshots/COMMIT) holding only the tag's weights file,
    HF_HUB_OFFLINE=1 and no hub_server: the tag loads from it."""
    from hub_helpers import build_hub_cache

    isolate_hub(monkeypatch, tmp_path / "cache")
    theirs, files = timm_repo(tmp_path, "vit_tiny_patch16_224")
    build_hub_cache(tmp_path / "cache", f"timm/{TAG}", {"model.safetensors": files["model.safetensors"]})
    go_offline(monkeypatch)
    x = images(height=224, width=224)
    with torch.no_grad():
        assert_close(vitkit.create_model(TAG, pretrained=True)(x), theirs(x))


def test_predict_and_train_take_a_tag(hub_server: HubServer, tmp_path: Path) -> None:
    """`vitkit predict --checkpoint NAME.TAG` runs the published classifier; `vitkit train --pretrained NAME.TAG`
    fine-tunes it (a new head for the folder's classes)."""
    from typer.testing import CliRunner

    from vitkit.cli import app

    _, files = timm_repo(tmp_path, "vit_tiny_patch16_224")
    hub_server.add(f"timm/{TAG}", files)
    folder = photo_folder(tmp_path / "photos")
    run = CliRunner().invoke
    env = {"COLUMNS": "200", "NO_COLOR": "1"}
    result = run(app, ["predict", *map(str, sorted(folder.rglob("*.png"))), "--checkpoint", TAG, "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 3
    result = run(app, ["train", "--pretrained", TAG, "--data", str(folder), "--val-split", "0.34", "--epochs", "1",
                       "--batch-size", "1", "--set", "depth=1", "--out", str(tmp_path / "run")], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["num_classes"] == 1
