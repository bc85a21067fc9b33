"""A checkpoint runs anywhere: the kernel is chosen where the model runs.

A model made with a GPU-only kernel (as a GPU training run with `--attention flash` makes it) is saved without
that choice, and loads, predicts and embeds on this CPU with no flag, with the numbers of the math reference. A
config.json written before vitkit 0.3, which names its kernel, loads too: a kernel that cannot run here gives way to
`auto` with one logged line. An explicit request that cannot run still raises `BackendUnavailableError` (a one-line
error on the command line), never a silent other kernel.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import vitkit
from interop_helpers import assert_close, realistic_
from vitkit.attention import BackendUnavailableError
from vitkit.cli import app

ENV = {"COLUMNS": "250", "TTY_COMPATIBLE": "0", "FORCE_COLOR": None, "NO_COLOR": "1"}
# img 16 / patch 4 = 16 tokens + class token; 4 heads != 17 tokens
TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=3, norm_eps=1e-6,
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)
GPU_CHOICES = ("flash", "xformers", "sdpa:efficient")  # none of them runs on CPU tensors
SAVED_CHOICES = (*GPU_CHOICES, "flex")  # flex runs on CPU, compiled


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def made_with(backend: str, **overrides: object) -> vitkit.VisionTransformer:
    return realistic_(vitkit.VisionTransformer(**TINY, **overrides, attention_type=backend))


def on_math(model: vitkit.VisionTransformer) -> vitkit.VisionTransformer:
    reference = vitkit.VisionTransformer(**TINY, attention_type="math").eval()
    reference.load_state_dict(model.state_dict())
    return reference


def x() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def legacy_dir(model: vitkit.VisionTransformer, path: Path, backend: str, deterministic: bool = False) -> Path:
    """`model` saved as vitkit 0.2 wrote it: its kernel and deterministic flag in config.json."""
    vitkit.save_pretrained(model, path)
    config = json.loads((path / "config.json").read_text())
    config.update(attention_type=backend, deterministic=deterministic)
    (path / "config.json").write_text(json.dumps(config))
    return path


def image_files(root: Path, count: int = 3) -> list[Path]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        paths.append(root / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.mark.parametrize("backend", SAVED_CHOICES)
def test_a_model_made_with_any_kernel_loads_and_runs_here_on_auto(tmp_path: Path, backend: str) -> None:
    model = made_with(backend)
    vitkit.save_pretrained(model, tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "attention_type" not in saved and "deterministic" not in saved  # a kernel is no architecture
    loaded = vitkit.load_pretrained(tmp_path / "m")
    assert loaded.attention_backend == "auto"
    reference = on_math(model)
    with torch.no_grad():
        assert_close(loaded(x()), reference(x()), atol=1e-5)
    assert_close(vitkit.embed(loaded, x()), vitkit.embed(reference, x()), atol=1e-5)


@pytest.mark.parametrize("backend", GPU_CHOICES)
def test_an_older_config_naming_a_kernel_that_cannot_run_here_falls_back_with_one_line(
        tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture) -> None:
    model = made_with(backend)
    with caplog.at_level(logging.WARNING, logger="vitkit"):
        loaded = vitkit.load_pretrained(legacy_dir(model, tmp_path / "m", backend, deterministic=True))
        with torch.no_grad():
            out = loaded(x())
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and f"'{backend}'" in said[0] and "running 'auto'" in said[0], said
    assert loaded.attention_choice == vitkit.attention.AttentionChoice("auto", deterministic=True)
    with torch.no_grad():
        assert_close(out, on_math(model)(x()), atol=1e-5)


def test_an_older_config_naming_a_kernel_that_runs_here_keeps_it_as_a_preference(tmp_path: Path) -> None:
    model = made_with("math")
    loaded = vitkit.load_pretrained(legacy_dir(model, tmp_path / "m", "scaled_dot_product"))
    assert loaded.attention_choice == vitkit.attention.AttentionChoice("math", fallback=True)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "use_flash": True}))
    with pytest.raises(ValueError, match="use_flash"):  # SimpleViT's old switch, never a 'vit' key
        vitkit.load_pretrained(tmp_path / "m")


@pytest.mark.parametrize("backend", GPU_CHOICES)
def test_an_explicit_request_that_cannot_run_still_raises(tmp_path: Path, backend: str) -> None:
    vitkit.save_pretrained(made_with("math"), tmp_path / "m")
    loaded = vitkit.load_pretrained(tmp_path / "m", attention=backend)
    with torch.no_grad(), pytest.raises(BackendUnavailableError, match=f"'{backend}' cannot run here: it .*; fix"):
        loaded(x())
    created = vitkit.create_model("vit_digits", attention=backend)
    with torch.no_grad(), pytest.raises(BackendUnavailableError):
        created(torch.randn(1, 1, 8, 8))


def test_attention_argument_sets_the_choice_for_create_and_load(tmp_path: Path) -> None:
    model = vitkit.create_model("vit_digits", attention="math", deterministic=True)
    assert model.attention_choice == vitkit.attention.AttentionChoice("math", deterministic=True)
    vitkit.save_pretrained(model, tmp_path / "m")
    assert vitkit.load_pretrained(tmp_path / "m", attention="sdpa").attention_backend == "sdpa"
    mine = vitkit.create_model("vit_digits", attention="math")
    assert vitkit.load_pretrained(tmp_path / "m", model=mine).attention_backend == "math"  # model= keeps its own
    with pytest.warns(DeprecationWarning, match="attention="):
        assert vitkit.create_model("vit_digits", attention_type="math").attention_backend == "math"


@pytest.mark.parametrize("backend", GPU_CHOICES)
def test_the_cli_runs_a_gpu_made_model_with_no_flag(tmp_path: Path, backend: str) -> None:
    model = made_with(backend)
    vitkit.save_pretrained(model, tmp_path / "m")
    legacy_dir(model, tmp_path / "old", backend)
    files = image_files(tmp_path / "images")
    for checkpoint in (tmp_path / "m", tmp_path / "old"):
        result = invoke("predict", "--checkpoint", checkpoint, *files, "--json")
        assert result.exit_code == 0, result.output
        probs = [row["top"][0]["probability"] for row in json.loads(result.stdout)]
        math_result = invoke("predict", "--checkpoint", checkpoint, *files, "--json", "--attention", "math")
        assert probs == pytest.approx([row["top"][0]["probability"] for row in json.loads(math_result.stdout)],
                                      abs=1e-5)
        result = invoke("embed", "--checkpoint", checkpoint, *files, "--out", tmp_path / f"emb-{checkpoint.name}")
        assert result.exit_code == 0, result.output
    rows, _ = vitkit.load_embeddings(tmp_path / "emb-m")
    assert_close(rows, vitkit.load_embeddings(tmp_path / "emb-old")[0], atol=1e-6)


def test_the_cli_refuses_an_explicit_kernel_that_cannot_run_in_one_line(tmp_path: Path) -> None:
    vitkit.save_pretrained(made_with("math"), tmp_path / "m")
    files = image_files(tmp_path / "images", count=1)
    for command in (["predict", *files], ["embed", *files, "--out", tmp_path / "emb"]):
        result = invoke(*command, "--checkpoint", tmp_path / "m", "--attention", "flash")
        assert result.exit_code == 1 and "Traceback" not in result.output
        last = result.output.strip().splitlines()[-1]  # after embed's progress bar, if it started
        assert last.startswith("error: ") and "'flash' cannot run here" in last, result.output


@pytest.mark.parametrize("command", ["train", "eval", "predict", "embed", "bench", "export", "attention-map"])
def test_every_command_that_runs_a_model_takes_attention(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "--attention" in result.output
