"""Export out of PyTorch: ONNX checked with onnxruntime, torch.export programs reloaded, the `vitkit export` command.

Every export is checked here independently of the library's own check: the test runs onnxruntime (or the
reloaded program) itself on fresh inputs at batch sizes the export never saw.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vitkit
from interop_helpers import assert_close, images, randomize_
from vitkit.attention import BackendUnavailableError
from vitkit.cli import app
from vitkit.deploy import (
    ParityCheck,
    check_parity,
    export_attention,
    export_onnx,
    export_program,
    load_program,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
if importlib.util.find_spec("onnxscript") is None:  # the dynamo exporter's translator; found, not imported (slow)
    pytest.skip("ONNX export needs onnxscript: pip install 'vitkit[export]'", allow_module_level=True)

ENV = {"COLUMNS": "250", "TTY_COMPATIBLE": "0", "FORCE_COLOR": None, "NO_COLOR": "1"}
TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=5)  # 16 patches, H=4


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


def token_vit(**overrides) -> vitkit.VisionTransformer:
    return randomize_(vitkit.VisionTransformer(**{**TINY, "global_pool": "token", **overrides}))


def map_vit(**overrides) -> vitkit.VisionTransformer:
    return randomize_(vitkit.VisionTransformer(**{**TINY, "global_pool": "map", "class_token": False, **overrides}))


def simple_vit() -> vitkit.SimpleViT:
    return randomize_(vitkit.SimpleViT(image_size=16, patch_size=4, num_classes=5, dim=32, depth=2, heads=4,
                                       mlp_dim=64, dim_head=8))


def ort_run(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def batch_dim(path: Path) -> str | int:
    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_param or dim.dim_value


def assert_ort_matches(path: Path, model: torch.nn.Module, batch_sizes=(1, 4)) -> None:
    for batch in batch_sizes:
        x = images(batch, 16, 16, seed=100 + batch)
        with torch.no_grad():
            expected = model(x)
        assert_close(ort_run(path, x), expected)


# --- ONNX ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_map_pooling_vit_dynamic_batch_with_external_data(tmp_path):
    model = map_vit(attention_type="auto")
    result = export_onnx(model, tmp_path / "map.onnx", external_data=True)
    assert result.check.passed and result.check.batch_sizes == (1, 3)
    assert max(result.check.max_abs_diff) <= 1e-4
    assert result.files == (tmp_path / "map.onnx", tmp_path / "map.onnx.data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.onnx", "map.onnx.data"]  # no temporaries left
    assert isinstance(batch_dim(result.path), str)  # a symbolic batch axis
    assert_ort_matches(result.path, model)
    assert model.attention_backend == "auto"  # the model runs its own backend again


@pytest.mark.slow
def test_onnx_simple_vit_dynamic_batch(tmp_path):
    model = simple_vit()
    result = export_onnx(model, tmp_path / "simple.onnx")
    assert result.check.passed and result.files == (tmp_path / "simple.onnx",)  # weights embedded
    assert isinstance(batch_dim(result.path), str)
    assert_ort_matches(result.path, model, batch_sizes=(1, 2, 5))
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert "Softmax" in ops and not any(op.startswith("ATen") for op in ops)  # attention lowered to plain ops


@pytest.mark.slow
def test_onnx_static_batch_takes_exactly_that_batch(tmp_path):
    model = token_vit()
    result = export_onnx(model, tmp_path / "static.onnx", dynamic_batch=False, batch_size=2)
    assert result.check.batch_sizes == (2, 2) and result.check.passed
    assert batch_dim(result.path) == 2
    assert_ort_matches(result.path, model, batch_sizes=(2,))


@pytest.mark.slow
def test_cli_export_onnx_token_vit_prints_its_check(tmp_path):
    model = token_vit(attention_type="math")
    vitkit.save_pretrained(model, tmp_path / "model")
    out = tmp_path / "exported" / "vit.onnx"
    result = invoke("export", "--checkpoint", str(tmp_path / "model"), "--format", "onnx", str(out),
                    "--dynamic-batch", "--opset", "18")
    assert result.exit_code == 0, result.output
    assert f"wrote: {out}" in result.stdout
    check = next(line for line in result.stdout.splitlines() if line.startswith("check:"))
    assert "onnxruntime" in check and "batch 1" in check and "batch 3" in check and check.endswith("ok")
    assert onnx.load(str(out)).opset_import[0].version == 18
    assert_ort_matches(out, vitkit.load_pretrained(tmp_path / "model"))


# --- torch.export ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torch_export_round_trip_with_dynamic_batch(tmp_path):
    model = map_vit(drop_path_rate=0.5).train()  # traced in eval mode (no drop-path), training mode kept after
    result = export_program(model, tmp_path / "map.pt2")
    assert result.check.passed and result.check.runtime == "torch.export program"
    assert model.training
    model.eval()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.pt2"]
    program = load_program(tmp_path / "map.pt2").module()
    for batch in (1, 5):
        x = images(batch, 16, 16, seed=batch)
        with torch.no_grad():
            assert_close(program(x), model(x))


@pytest.mark.slow
def test_cli_torch_export_simple_vit_json(tmp_path):
    vitkit.save_pretrained(simple_vit(), tmp_path / "model")
    out = tmp_path / "simple.pt2"
    result = invoke("export", "--checkpoint", str(tmp_path / "model"), str(out), "--json")  # format from suffix
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["format"] == "torch-export" and data["files"] == [str(out)]
    assert data["check"]["passed"] and data["check"]["batch_sizes"] == [1, 3]
    x = images(2, 16, 16)
    with torch.no_grad():
        assert_close(load_program(out).module()(x), vitkit.load_pretrained(tmp_path / "model")(x))


@pytest.mark.slow
def test_cli_static_batch_export_names_its_one_batch_size_once(tmp_path):
    vitkit.save_pretrained(simple_vit(), tmp_path / "model")
    result = invoke("export", "--checkpoint", str(tmp_path / "model"), str(tmp_path / "static.pt2"), "--static-batch",
                    "--batch-size", "8")
    assert result.exit_code == 0, result.output
    [check] = [line for line in result.stdout.splitlines() if line.startswith("check:")]
    assert re.search(r"max \|diff\| 2 batches of 8: \S+, \S+ \(tolerance", check) and "batch 8:" not in check, check


@pytest.mark.slow
def test_failed_check_writes_nothing(tmp_path, monkeypatch):
    import vitkit.deploy.program as program

    failing = ParityCheck("torch.export program", "attention auto", (1, 3), (1e-9, 0.5), 1e-4)
    monkeypatch.setattr(program, "validate_program", lambda *args, **kwargs: failing)
    with pytest.raises(ValueError, match=r"does not match PyTorch.*batch 3: 5.00e-01.*FAILED"):
        export_program(token_vit(), tmp_path / "bad.pt2")
    assert list(tmp_path.iterdir()) == []


# --- the pieces ------------------------------------------------------------------------------------------


def test_check_parity_reports_each_batch_size_and_fails_past_tolerance():
    model = token_vit()
    good = check_parity(lambda x: model(x).numpy(), model, runtime="same", batch_sizes=(1, 3))
    assert good.passed and good.batch_sizes == (1, 3) and max(good.max_abs_diff) <= 1e-6
    bad = check_parity(lambda x: model(x) + 1e-3, model, runtime="off by 1e-3")
    assert not bad.passed and all(abs(d - 1e-3) < 1e-5 for d in bad.max_abs_diff)
    assert bad.describe().endswith("FAILED")
    assert re.search(r"max \|diff\| batch 1: \S+, batch 3: \S+ \(tolerance", bad.describe())
    static = ParityCheck("onnxruntime", "attention sdpa", (8, 8), (1e-6, 2e-6), 1e-4).describe()
    assert "max |diff| 2 batches of 8: 1.00e-06, 2.00e-06 (tolerance 1e-04): ok" in static
    with pytest.raises(ValueError, match="returned shape"):
        check_parity(lambda x: model(x)[:, :2], model, runtime="wrong")
    assert good.reference == "attention auto"
    flash = token_vit(attention_type="flash")  # cannot run on CPU tensors: the reference runs the export backend

    def on_sdpa(x: torch.Tensor) -> torch.Tensor:
        with export_attention(flash, "sdpa"):
            return flash(x)

    fallback = check_parity(on_sdpa, flash, runtime="sdpa graph")
    assert fallback.reference == "attention sdpa, as flash cannot run here" and fallback.passed


def test_export_attention_runs_every_layer_on_the_export_backend_and_restores_after_an_error():
    model = map_vit(attention_type="flash")  # blocks and MAP head on a kernel this CPU cannot run
    reference = map_vit(attention_type="math")
    reference.load_state_dict(model.state_dict())
    x = images(height=16, width=16)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="boom"), export_attention(model, "sdpa"):
            assert_close(model(x), reference(x), atol=1e-5)
            raise RuntimeError("boom")
        with pytest.raises(BackendUnavailableError, match="flash"):
            model(x)
    assert model.attention_backend == "flash"
    with pytest.raises(ValueError, match="cannot be exported"), export_attention(model, "flash"):
        pass


def test_export_refuses_non_float32_models_and_wrong_suffixes(tmp_path):
    with pytest.raises(ValueError, match=r"float32 model.*float64"):
        export_program(token_vit().double(), tmp_path / "m.pt2")
    with pytest.raises(ValueError, match=r"must end in \.pt2"):
        export_program(token_vit(), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match=r"must end in \.onnx"):
        export_onnx(token_vit(), tmp_path / "m.pt2")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(token_vit(), tmp_path / "m.onnx", opset=11)
    assert list(tmp_path.iterdir()) == []


def test_load_program_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no exported program"):
        load_program(tmp_path / "absent.pt2")
    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    with pytest.raises(ValueError, match=r"not a readable torch\.export program"):
        load_program(tmp_path / "junk.pt2")


# --- CLI errors: one line, non-zero exit --------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["model.safetensors", "config.json"])
def test_cli_checkpoint_missing_a_file_is_one_clear_line(tmp_path, missing):
    vitkit.save_pretrained(token_vit(), tmp_path / "model")
    (tmp_path / "model" / missing).unlink()
    result = invoke("export", "--checkpoint", str(tmp_path / "model"), "--format", "onnx", str(tmp_path / "m.onnx"))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: --checkpoint")
    assert f"missing {missing}" in result.stderr and "config.json + model.safetensors" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export_argument_errors(tmp_path):
    vitkit.save_pretrained(token_vit(), tmp_path / "model")
    cases = {
        ("--format", "tflite", str(tmp_path / "m.onnx")): "--format must be one of onnx, torch-export",
        (str(tmp_path / "m.bin"),): "cannot tell the format from m.bin",
        ("--format", "onnx", str(tmp_path / "m.pt2")): "writes a .onnx file",
        ("--static-batch", "--batch-size", "0", str(tmp_path / "m.pt2")): "--batch-size must be a positive",
        ("--attention", "flash", str(tmp_path / "m.pt2")): "cannot be exported; use one of sdpa, math",
    }
    for args, message in cases.items():
        result = invoke("export", "--checkpoint", str(tmp_path / "model"), *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("error: ") and message in result.stderr, (args, result.stderr)
    result = invoke("export", "--checkpoint", str(tmp_path / "nowhere"), str(tmp_path / "m.pt2"))
    assert result.exit_code == 1 and "does not exist" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_exported_inputs_are_seeded_and_shaped_by_the_config():
    from vitkit.deploy import example_images, input_shape

    model = vitkit.VisionTransformer(**{**TINY, "img_size": (16, 24), "in_chans": 1, "mean": (0.5,), "std": (0.5,)})
    assert input_shape(model) == (1, 16, 24)
    a, b = example_images(model, 3, seed=7), example_images(model, 3, seed=7)
    assert a.shape == (3, 1, 16, 24) and torch.equal(a, b)
    assert not np.allclose(a.numpy(), example_images(model, 3, seed=8).numpy())
