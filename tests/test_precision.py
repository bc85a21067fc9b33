"""bf16 inference is correct on every kind of tower vitkit builds: run under `torch.autocast` or with the weights
themselves in bf16, dense and packed, its features point where fp32's do (cosine >= 0.999 at a trained model's
magnitudes), through learned tables, RoPE, MAP heads, windows and the patch merger."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import vitkit
from interop_helpers import realistic_

COSINE = 0.999
# name -> changes that keep it small but keep what makes it that kind of tower
TOWERS = {
    "vit_small_patch16_224": dict(depth=4),
    "siglip_base_patch16_224": dict(depth=4),  # MAP head
    "vit_small_patch16_dinov3": dict(depth=4),  # 2D RoPE, registers
    "siglip2_base_patch16_naflex": dict(depth=4),  # a table resized per image
    "qwen2_5_vl_vision_3b": dict(depth=4, full_attention_blocks=(3,), embed_dim=256, num_heads=4,
                                 mlp_hidden_dim=512),  # windows, merger
}


def pictures(model: torch.nn.Module) -> list[torch.Tensor]:
    step = model.patch_embed.patch_size[0] * model.config.merge_size
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(3, step * h, step * w, generator=gen) for h, w in ((6, 4), (3, 7), (8, 8))]


def rows(model: torch.nn.Module, images: list[torch.Tensor], dtype: torch.dtype, autocast: bool) -> torch.Tensor:
    """The pooled row of each image, packed, in `dtype` (or fp32 weights under autocast to it)."""
    with torch.no_grad(), torch.autocast("cpu", dtype, enabled=autocast):
        batch = model.pack([x.to(dtype if not autocast else torch.float32) for x in images])
        return model.forward_packed(batch, pre_logits=True).float()


@pytest.mark.parametrize("name", sorted(TOWERS))
@pytest.mark.parametrize("mode", ["autocast", "bf16 weights"])
def test_bf16_features_point_where_fp32_does(name: str, mode: str) -> None:
    model = realistic_(vitkit.create_model(name, num_classes=0, dynamic_img_size=True, **TOWERS[name]), seed=2)
    images = pictures(model)
    reference = rows(model, images, torch.float32, autocast=False)
    if mode == "autocast":
        got = rows(model, images, torch.bfloat16, autocast=True)
    else:
        got = rows(copy.deepcopy(model).to(torch.bfloat16), images, torch.bfloat16, autocast=False)
    cosine = F.cosine_similarity(got, reference)
    assert cosine.min() >= COSINE, cosine
    assert not torch.equal(got, reference)  # it did run in bf16


def test_dense_bf16_weights_equal_packed_bf16() -> None:
    model = realistic_(vitkit.create_model("vit_small_patch16_dinov3", num_classes=0, depth=2), seed=2)
    model = model.to(torch.bfloat16)
    x = torch.randn(2, 3, 64, 96, dtype=torch.bfloat16)
    with torch.no_grad():
        dense = model(x).float()
        packed = model.forward_packed(model.pack(list(x)), pre_logits=True).float()
    assert F.cosine_similarity(dense, packed).min() >= 0.9999


# --- inference precisions by name (vitkit.runtime.INFERENCE_PRECISIONS) ------------------------------------------

INT8_COSINE = 0.99


@pytest.mark.parametrize("name", sorted(TOWERS))
@pytest.mark.parametrize("precision", ["bf16", "bf16-autocast", "int8"])
def test_each_inference_precision_keeps_features_where_fp32_has_them(name: str, precision: str) -> None:
    from vitkit.runtime import INFERENCE_PRECISIONS

    model = realistic_(vitkit.create_model(name, num_classes=0, dynamic_img_size=True, **TOWERS[name]), seed=2).eval()
    images = pictures(model)
    reference = rows(model, images, torch.float32, autocast=False)
    chosen = INFERENCE_PRECISIONS[precision]
    cpu = torch.device("cpu")
    runner = chosen.prepare(model, cpu, inplace=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the original untouched
    with torch.no_grad(), chosen.context(cpu):
        got = runner.forward_packed(runner.pack([x.to(chosen.inputs) for x in images]), pre_logits=True).float()
    cosine = F.cosine_similarity(got, reference)
    assert cosine.min() >= (INT8_COSINE if precision == "int8" else COSINE), cosine
    assert not torch.equal(got, reference)
    if precision == "int8":
        kinds = {type(m).__module__ for m in runner.modules()}
        assert any("quantized" in kind for kind in kinds), kinds  # linear layers replaced


def test_int8_folds_a_masked_key_bias_and_runs_on_cpu_only() -> None:
    from vitkit.runtime import INFERENCE_PRECISIONS

    model = realistic_(vitkit.create_model("vit_small_patch16_dinov3_qkvb", num_classes=0, depth=2), seed=3).eval()
    attention = model.blocks[0].attn
    assert attention.bias_mask is not None
    with torch.no_grad():
        attention.qkv.bias.normal_()  # a key bias the mask must keep out
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        reference = model(x)
        folded = copy.deepcopy(model)
        for module in folded.modules():
            if hasattr(module, "fold_for_inference"):
                module.fold_for_inference()
        assert folded.blocks[0].attn.bias_mask is None
        torch.testing.assert_close(folded(x), reference, rtol=1e-5, atol=1e-5)
        quantized = INFERENCE_PRECISIONS["int8"].prepare(model, torch.device("cpu"))
        assert F.cosine_similarity(quantized(x), reference).min() >= INT8_COSINE
    with pytest.raises(ValueError, match="runs on CPU only"):
        INFERENCE_PRECISIONS["int8"].prepare(model, torch.device("cuda"))


def test_prepare_casts_in_place_or_copies_and_auto_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from vitkit.runtime import inference_precision, prepare_inference

    model = vitkit.create_model("vit_tiny_patch16_224", num_classes=3, depth=1)
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"cpu_name": "Test Xeon", "amx_bf16": True})
    ready, chosen, why = prepare_inference(model, "auto", cpu)
    assert (chosen.name, why) == ("bf16", "auto: Test Xeon has amx_bf16")
    assert ready is model and model.head.weight.dtype == torch.bfloat16 and not model.training
    bf16 = inference_precision("bf16", cpu)[0]
    assert bf16.prepare(model, cpu, inplace=False) is model  # nothing to change: no copy
    fp32, _ = inference_precision("fp32", cpu)
    copied = fp32.prepare(model, cpu, inplace=False)
    assert copied is not model and copied.head.weight.dtype == torch.float32
    assert model.head.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"--precision must be auto or one of .*int8"):
        inference_precision("bf32", cpu)


def test_embed_records_the_precision_it_resolved_to(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    model = realistic_(vitkit.create_model("vit_tiny_patch16_224", num_classes=0, depth=2, img_size=32), seed=1)
    images = torch.randn(5, 3, 32, 32)
    exact = vitkit.embed(model, images)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"cpu_name": "Test Xeon", "avx512_bf16": True})
    out = vitkit.embed(model, images, precision="auto", out=tmp_path / "emb")
    config = json.loads((out / "embed_config.json").read_text())
    assert config["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model as it was
    rows, _ = vitkit.load_embeddings(out)
    assert F.cosine_similarity(rows, exact).min() >= COSINE and not torch.equal(rows, exact)


def test_bench_settings_resolve_auto_and_refuse_int8_training(monkeypatch: pytest.MonkeyPatch) -> None:
    from vitkit.bench.runner import ModelBenchSettings

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"cpu_name": "Test CPU"})
    assert ModelBenchSettings(precision="auto", device="cpu").precision == "fp32"
    assert ModelBenchSettings(precision="int8", device="cpu").precision == "int8"
    with pytest.raises(ValueError, match="precision int8 is for inference; benchmark it with --mode infer"):
        ModelBenchSettings(precision="int8", device="cpu", mode="both")
    with pytest.raises(ValueError, match="--precision must be auto or one of"):
        ModelBenchSettings(precision="fp8", device="cpu")


def test_eval_and_predict_say_their_precision_first(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from vitkit.cli import app

    model = realistic_(vitkit.create_model("vit_tiny_patch16_224", num_classes=10, depth=1, img_size=32,
                                         in_chans=1, mean=(0.5,), std=(0.5,)), seed=4)
    vitkit.save_pretrained(model, tmp_path / "model")
    image = tmp_path / "a.png"
    Image.fromarray(torch.randint(0, 255, (40, 30, 3), dtype=torch.uint8).numpy()).save(image)
    runner = CliRunner()
    env = {"COLUMNS": "200", "NO_COLOR": "1"}

    def invoke(*args: str):
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"cpu_name": "Test Xeon", "amx_bf16": True})
    shown = invoke("predict", "--checkpoint", str(tmp_path / "model"), str(image))
    assert shown.stdout.splitlines()[0] == "precision bf16 (auto: Test Xeon has amx_bf16)"
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"cpu_name": "Test EPYC"})
    shown = invoke("predict", "--checkpoint", str(tmp_path / "model"), "--json", str(image))
    assert shown.stderr.startswith("precision fp32 (auto: Test EPYC has neither amx_bf16 nor avx512_bf16")
    assert json.loads(shown.stdout)[0]["image"] == str(image)  # stdout stays JSON
    exact = json.loads(invoke("eval", "--checkpoint", str(tmp_path / "model"), "--precision", "fp32", "--json").stdout)
    quantized = invoke("eval", "--checkpoint", str(tmp_path / "model"), "--precision", "int8", "--json")
    assert quantized.stderr.startswith("precision int8 (as asked)")
    report = json.loads(quantized.stdout)
    assert report["precision"] == "int8" and exact["precision"] == "fp32" and report["count"] == exact["count"]
    assert abs(report["top1"] - exact["top1"]) <= 0.05  # the same model, its linear layers in int8
    bad = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "model"), "--precision", "fp8"], env=env)
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "--precision must be auto or one of" in bad.output


def test_readme_lists_every_inference_precision() -> None:
    import re
    from pathlib import Path

    from vitkit.runtime import INFERENCE_PRECISIONS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Precision: fp32, bf16, int8")[1].split("\n## ")[0]
    listed = {name for row in re.findall(r"^\| (`.+?) \|", section, re.MULTILINE)
              for name in re.findall(r"`([\w-]+)`", row)}
    assert listed == {*INFERENCE_PRECISIONS, "auto"}
