"""Bad input never crashes badly: one table of wrong calls and wrong command lines, each asserting the exception
type (or exit code) and that the message names the argument at fault and the fix."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import vitkit
from vitkit.attention import BackendUnavailableError
from vitkit.checkpoints import read_state_dict
from vitkit.cli import app
from vitkit.data import DataConfig
from vitkit.models import ViTConfig, build_model, config_from_dict
from vitkit.train import TrainOptions

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, num_classes=3)
TINY_SIMPLE = dict(image_size=16, patch_size=4, dim=32, depth=1, heads=2, mlp_dim=64, dim_head=16, num_classes=3)


def tiny_vit(**overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return vitkit.VisionTransformer(**{**TINY, **overrides}).eval()


def images(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*(shape or (2, 3, 16, 16))).to(dtype)


def saved(tmp: Path, **overrides: object) -> Path:
    """A vitkit model directory of the tiny ViT."""
    vitkit.save_pretrained(tiny_vit(**overrides), tmp / "model")
    return tmp / "model"


def edit_config(directory: Path, change: Callable[[dict], None]) -> Path:
    config = json.loads((directory / "config.json").read_text())
    change(config)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def edit_weights(directory: Path, change: Callable[[dict], None]) -> Path:
    tensors = load_file(str(directory / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


class Payload:
    """A class a weights-only unpickler must refuse to build."""


def image_folder(root: Path, classes: int = 2, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / f"class_{c}" / f"{i}.png")
    return root


# --- the Python API ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """`call(tmp_path)` must raise `error` with every fragment in its message (the argument, and the fix)."""

    id: str
    call: Callable[[Path], object]
    error: type[BaseException]
    fragments: tuple[str, ...]


def _truncated(tmp: Path) -> object:
    path = saved(tmp) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:300])
    return vitkit.load_pretrained(path.parent)


def _empty(tmp: Path) -> object:
    (tmp / "w.pt").write_bytes(b"")
    return vitkit.load_pretrained(tmp / "w.pt", num_heads=2)


def _not_a_checkpoint(tmp: Path) -> object:
    (tmp / "notes.safetensors").write_text("these are my notes, not tensors\n" * 20)
    return vitkit.load_pretrained(tmp / "notes.safetensors")


def _pickle_of_a_list(tmp: Path) -> object:
    torch.save([1, 2, 3], tmp / "list.pt")
    return vitkit.load_pretrained(tmp / "list.pt")


def _other_family(tmp: Path) -> object:
    save_file({"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}, str(tmp / "r.safetensors"))
    return vitkit.load_pretrained(tmp / "r.safetensors")


def _untrusted_pickle(tmp: Path) -> object:
    torch.save({"state_dict": tiny_vit().state_dict(), "extra": Payload()}, tmp / "run.pth")
    return read_state_dict(tmp / "run.pth")


def _shard_outside(tmp: Path) -> object:
    directory = saved(tmp)
    (directory / "model.safetensors").rename(tmp / "outside.safetensors")
    index = {"weight_map": {"head.weight": "../outside.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return vitkit.load_pretrained(directory)


API_CASES = [
    Case("rank", lambda t: tiny_vit()(images(3, 16, 16)), ValueError, ("images must be 4-D", "x.unsqueeze(0)")),
    Case("channels", lambda t: tiny_vit()(images(2, 1, 16, 16)), ValueError, ("in_chans=3", "in_chans=1")),
    Case("simple-vit-channels", lambda t: vitkit.SimpleViT(**TINY_SIMPLE)(images(2, 4, 16, 16)), ValueError,
         ("in_chans=3", "in_chans=4")),
    Case("integer-dtype", lambda t: tiny_vit()(images(dtype=torch.uint8)), TypeError,
         ("floating-point", "x.float()")),
    Case("float-dtype-mismatch", lambda t: tiny_vit()(images(dtype=torch.float64)), TypeError,
         ("torch.float64", "x.to(torch.float32)", "model.to(torch.float64)")),
    Case("not-a-tensor", lambda t: tiny_vit()(np.zeros((2, 3, 16, 16), np.float32)), TypeError,
         ("torch.Tensor", "torch.as_tensor")),
    Case("image-size", lambda t: tiny_vit()(images(2, 3, 24, 24)), ValueError,
         ("img_size 16x16", "dynamic_img_size=True")),
    Case("image-size-not-divisible", lambda t: tiny_vit(dynamic_img_size=True)(images(2, 3, 18, 16)), ValueError,
         ("patch_size 4x4", "dynamic_img_pad=True")),
    Case("simple-vit-image-size", lambda t: vitkit.SimpleViT(**TINY_SIMPLE)(images(2, 3, 32, 32)), ValueError,
         ("img_size 16x16", "dynamic_img_size=True")),
    Case("nan", lambda t: tiny_vit(check_finite=True)(images().index_fill_(0, torch.tensor([1]), float("nan"))),
         ValueError, ("NaN", "check_finite=True", "nan_to_num")),
    Case("inf", lambda t: vitkit.SimpleViT(**TINY_SIMPLE, check_finite=True)(images() / 0.0), ValueError,
         ("Inf", "check_finite=True")),
    Case("empty-batch", lambda t: tiny_vit()(images(0, 3, 16, 16)), ValueError, ("empty batch", "at least one")),
    Case("unknown-model", lambda t: vitkit.create_model("vit_gigantic_patch16_224"), ValueError,
         ("unknown model 'vit_gigantic_patch16_224'", "vitkit models")),
    Case("unknown-backend", lambda t: tiny_vit(attention_type="fastest"), ValueError,
         ("unknown attention backend 'fastest'", "choose one of", "sdpa")),
    Case("unknown-pooling", lambda t: tiny_vit(global_pool="mean"), ValueError, ("global_pool", "'avg'")),
    Case("token-pool-without-class-token", lambda t: tiny_vit(class_token=False), ValueError,
         ("global_pool='token'", "class_token=True", "'avg'")),
    Case("heads-do-not-divide", lambda t: tiny_vit(num_heads=3), ValueError, ("embed_dim (32)", "num_heads (3)")),
    Case("wrong-field-type", lambda t: tiny_vit(depth="2"), ValueError, ("depth must be int", "'2'")),
    Case("backend-on-wrong-device", lambda t: tiny_vit(attention_type="flash")(images()), BackendUnavailableError,
         ("'flash'", "cuda", "fix:")),
    Case("head-dim-backend-cannot-take", lambda t: tiny_vit(num_heads=1, head_dim=288, attention_type="sdpa:flash")(
        images()), BackendUnavailableError, ("head_dim <= 256", "288", "fix:")),
    Case("mask-shape", lambda t: tiny_vit().forward_features(images(), attn_mask=torch.ones(7, 7, dtype=torch.bool)),
         ValueError, ("attn_mask of shape (7, 7)", "(B, H, N, M) = (2, 2, 17, 17)")),
    Case("mask-dtype", lambda t: tiny_vit().forward_features(images(), attn_mask=torch.ones(17, 17, dtype=torch.int64)),
         TypeError, ("attn_mask", "bool (True = attend)", "torch.int64")),
    Case("mean-per-channel", lambda t: DataConfig.of(ViTConfig(**TINY, in_chans=1)), ValueError,
         ("mean has 3 values", "1 channels", "one value per channel")),
    Case("missing-file", lambda t: vitkit.load_pretrained(t / "nowhere"), FileNotFoundError,
         ("no checkpoint at", "model directory")),
    Case("truncated-file", _truncated, ValueError, ("model.safetensors", "truncated or corrupt")),
    Case("empty-file", _empty, ValueError, ("w.pt", "is empty")),
    Case("not-a-checkpoint", _not_a_checkpoint, ValueError, ("notes.safetensors", "not a readable safetensors")),
    Case("pickle-not-a-state-dict", _pickle_of_a_list, ValueError, ("list.pt", "state dict of tensors")),
    Case("other-family-weights", _other_family, ValueError, ("r.safetensors", "source_format")),
    Case("wrong-family-config", lambda t: vitkit.load_pretrained(edit_config(saved(t), lambda c: c.update(
        family="resnet"))), ValueError, ("family 'resnet'", "vit, simple_vit")),
    Case("weights-for-another-model", lambda t: vitkit.load_pretrained(saved(t), model=vitkit.SimpleViT(
        **TINY_SIMPLE)), ValueError, ("do not fit the model", "missing", "strict=False")),
    Case("missing-tensor", lambda t: vitkit.load_pretrained(edit_weights(saved(t), lambda w: w.pop("head.weight"))),
         ValueError, ("1 missing: head.weight", "strict=False")),
    Case("wrong-shape-tensor", lambda t: vitkit.load_pretrained(edit_weights(saved(t), lambda w: w.update(
        {"head.weight": torch.zeros(5, 32)}))), ValueError, ("head.weight: checkpoint (5, 32) vs model (3, 32)",)),
    Case("config-unknown-field", lambda t: vitkit.load_pretrained(edit_config(saved(t), lambda c: c.update(
        wings=2))), ValueError, ("wings", "remove them")),
    Case("config-missing-field", lambda t: vitkit.load_pretrained(edit_config(saved(t), lambda c: c.pop(
        "embed_dim"))), ValueError, ("lacks required fields: embed_dim", "add them")),
    Case("config-bad-value", lambda t: vitkit.load_pretrained(edit_config(saved(t), lambda c: c.update(
        patch_size=[4, 0]))), ValueError, ("patch_size", "positive int")),
    Case("config-not-json", lambda t: vitkit.load_pretrained((saved(t) / "config.json").write_text("{oops") and (
        t / "model")), ValueError, ("config.json", "JSON")),
    Case("config-not-an-object", lambda t: config_from_dict(["vit"]), ValueError, ("JSON object",)),
    Case("build-model-of-a-name", lambda t: build_model("vit_digits"), TypeError, ("create_model(name)",)),
    Case("untrusted-pickle", _untrusted_pickle, ValueError, ("run.pth", "never runs untrusted pickles",
                                                             "trust_pickle=True", "--trust-pickle")),
    Case("shard-outside-the-directory", _shard_outside, ValueError, ("'../outside.safetensors'",
                                                                     "inside its own directory")),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_python_api_bad_input(case: Case, tmp_path: Path) -> None:
    with pytest.raises(case.error) as err:
        case.call(tmp_path)
    message = str(err.value)
    missing = [f for f in case.fragments if f not in message]
    assert not missing, f"{missing} not in: {message}"


def test_config_validation_never_leaks_a_python_comparison_error() -> None:
    """Values of the wrong type are named before any rule compares them (a str < int TypeError names nothing)."""
    for field, value in (("mlp_ratio", "4"), ("norm_eps", None), ("img_size", 3.5), ("img_size", True),
                         ("drop_rate", True), ("num_classes", 2.0), ("init_values", float("nan")),
                         ("mean", ("a", "b", "c")), ("std", (0.5, 0.0, 0.5))):
        with pytest.raises(ValueError, match=field):
            ViTConfig(**{**TINY, field: value})


# --- the command line ----------------------------------------------------------------------------


def _cli_unwritable_out(tmp: Path) -> list[str]:
    (tmp / "a_file").write_text("")
    return ["train", "--out", str(tmp / "a_file" / "run"), "--epochs", "1"]


def _cli_empty_class(tmp: Path) -> list[str]:
    data = image_folder(tmp / "data")
    (data / "class_2").mkdir()
    return ["train", "--data", str(data), "--val-split", "0.3", "--out", str(tmp / "run")]


def _cli_unreadable_image(tmp: Path) -> list[str]:
    data = image_folder(tmp / "data")
    (data / "class_1" / "broken.png").write_bytes(b"\x89PNG not really")
    return ["train", "--data", str(data), "--val-split", "0.3", "--out", str(tmp / "run")]


def _cli_predict_unreadable(tmp: Path) -> list[str]:
    (tmp / "cat.jpg").write_bytes(b"GIF89a but truncated")
    return ["predict", "--checkpoint", str(saved(tmp)), str(tmp / "cat.jpg")]


def _cli_untrusted_pickle(tmp: Path) -> list[str]:
    torch.save({"model": tiny_vit().state_dict(), "args": Payload()}, tmp / "ckpt.pt")
    return ["convert", str(tmp / "ckpt.pt"), str(tmp / "out"), "--num-heads", "2"]


CLI_CASES = [
    ("unknown-option", lambda t: ["train", "--bogus", "1"], 2, ("No such option: --bogus", "vitkit train --help")),
    ("unknown-command", lambda t: ["trian"], 2, ("No such command 'trian'", "vitkit --help")),
    ("option-of-wrong-type", lambda t: ["train", "--epochs", "many"], 2, ("'--epochs'", "vitkit train --help")),
    ("batch-size-0", lambda t: ["train", "--batch-size", "0", "--out", str(t / "run")], 1,
     ("--batch-size", "positive integer")),
    ("missing-data-directory", lambda t: ["train", "--data", str(t / "nope"), "--val-split", "0.2", "--out",
                                          str(t / "run")], 1, ("data directory not found", "nope")),
    ("empty-class-folder", _cli_empty_class, 1, ("class_2", "holds no images", ".png")),
    ("unreadable-image", _cli_unreadable_image, 1, ("cannot read image", "broken.png")),
    ("unwritable-output", _cli_unwritable_out, 1, ("--out", "not a writable directory", "pick another --out")),
    ("backend-this-machine-lacks", lambda t: ["train", "--attention", "flash", "--device", "cpu", "--epochs", "1",
                                              "--batch-size", "256", "--out", str(t / "flash")], 1,
     ("attention backend 'flash' cannot run here", "fix:")),
    ("eval-missing-checkpoint", lambda t: ["eval", "--checkpoint", str(t / "nope")], 1, ("no checkpoint at",)),
    ("eval-batch-size-0", lambda t: ["eval", "--checkpoint", str(t), "--batch-size", "0"], 1,
     ("--batch-size", "positive integer")),
    ("predict-top-k-0", lambda t: ["predict", "--checkpoint", str(t), "--top-k", "0", "x.png"], 1,
     ("--top-k", "positive integer")),
    ("predict-unreadable-image", _cli_predict_unreadable, 1, ("cannot read image", "cat.jpg")),
    ("convert-untrusted-pickle", _cli_untrusted_pickle, 1, ("never runs untrusted pickles", "--trust-pickle")),
]


@pytest.mark.parametrize(("args", "code", "fragments"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_and_nonzero(args: Callable[[Path], list[str]], code: int,
                                               fragments: tuple[str, ...], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, args(tmp_path), env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    missing = [f for f in fragments if f not in lines[0]]
    assert not missing, f"{missing} not in: {lines[0]}"
    assert not (tmp_path / "run").exists()  # nothing written by a run that could not start


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes through permission bits")
def test_cli_read_only_output_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = CliRunner().invoke(app, ["train", "--out", str(locked / "run"), "--epochs", "1"])
    assert result.exit_code == 1 and "not a writable directory" in result.stderr


def test_a_run_that_failed_before_its_first_checkpoint_can_be_started_again(tmp_path: Path) -> None:
    """Only options and labels were written: the same command, fixed, must not be told to --resume."""
    args = ["train", "--attention", "flash", "--device", "cpu", "--epochs", "1", "--batch-size", "256",
            "--out", str(tmp_path / "run")]
    for _ in range(2):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and "'flash' cannot run here" in result.stderr, result.stderr
    assert not (tmp_path / "run" / "train_state.pt").exists()


def test_resume_from_a_damaged_state_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_options.json").write_text(TrainOptions().to_json())
    (run / "train_state.pt").write_bytes(b"PK\x03\x04 cut short")
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "train_state.pt is unreadable" in result.stderr and "cannot resume" in result.stderr
