"""No traceback from any file: every unreadable weights file fails with ValueError / FileNotFoundError naming the
file and what is wrong with it, from the Python API and, as one `error:` line and exit 1, from every command that
reads weights (predict, eval, convert, export, attention-map, train --pretrained)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

import vitkit
from vitkit.checkpoints import load_checkpoint, read_state_dict
from vitkit.checkpoints.pretrained import check_floating
from vitkit.cli import app

SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz")
# Greyscale 8x8 with 10 classes, so `vitkit train --pretrained` on the bundled digits gets as far as the weights.
TINY = dict(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2, num_classes=10, in_chans=1, mean=(0.5,),
            std=(0.5,))
ENV = {"COLUMNS": "250", "NO_COLOR": "1"}
# Random bytes, and random text (what a saved web page or note becomes: every printable byte is a pickle opcode).
BYTES = st.one_of(st.binary(max_size=600), st.text(max_size=200).map(str.encode))
HF_CONFIG = {"model_type": "vit", "hidden_size": 16, "num_attention_heads": 2}
FUZZ = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return vitkit.VisionTransformer(**TINY).eval()


def real_file(path: Path) -> Path:
    """The tiny ViT's weights in the format `path`'s suffix names (.pth: torch's legacy, non-zip format)."""
    state = tiny_vit().state_dict()
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    elif path.suffix == ".npz":
        np.savez(path, **{key: tensor.numpy() for key, tensor in state.items()})
    else:
        torch.save(state, path, _use_new_zipfile_serialization=path.suffix != ".pth")
    return path


def _text(path: Path) -> None:
    path.write_text("these are my notes, not tensors\n" * 20)


def _html(path: Path) -> None:
    path.write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Log in first</body></html>\n")


def _lfs_pointer(path: Path) -> None:
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 345678\n")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(512))  # starts b"\xcd\x07": neither a zip nor a pickle


def _truncated(path: Path) -> None:
    data = real_file(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])


# What a file holds -> (how to write it under any weights name, what the error must say about it).
BAD_CONTENTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "text": (_text, "it is text, not weights: 'these are my notes"),
    "html": (_html, "it is an HTML page"),
    "lfs-pointer": (_lfs_pointer, "Git LFS pointer"),
    "empty": (_empty, "is empty"),
    "random-bytes": (_random_bytes, "truncated or corrupt"),
    "truncated": (_truncated, "truncated or corrupt"),
}


def model_dir(root: Path, weights: Callable[[Path], None] | None) -> Path:
    """A vitkit model directory whose model.safetensors `weights` writes (None: no weights file at all)."""
    directory = root / "model"
    vitkit.save_pretrained(tiny_vit(), directory)
    (directory / "model.safetensors").unlink()
    if weights is not None:
        weights(directory / "model.safetensors")
    return directory


def image(root: Path) -> Path:
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "digit.png")
    return root / "digit.png"


# --- the Python API ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("content", BAD_CONTENTS)
def test_unreadable_file_says_which_and_why(tmp_path: Path, content: str, suffix: str) -> None:
    write, says = BAD_CONTENTS[content]
    path = tmp_path / f"weights{suffix}"
    write(path)
    for load in (read_state_dict, vitkit.load_pretrained, lambda p: load_checkpoint(p, num_heads=2)):
        with pytest.raises(ValueError) as err:
            load(path)
        assert str(path) in str(err.value) and says in str(err.value), str(err.value)


@pytest.mark.parametrize("content", BAD_CONTENTS)
def test_unreadable_weights_of_a_model_directory(tmp_path: Path, content: str) -> None:
    write, says = BAD_CONTENTS[content]
    directory = model_dir(tmp_path, write)
    with pytest.raises(ValueError) as err:
        vitkit.load_pretrained(directory)
    assert str(directory / "model.safetensors") in str(err.value) and says in str(err.value), str(err.value)


def test_safetensors_with_a_garbage_header_length(tmp_path: Path) -> None:
    path = real_file(tmp_path / "w.safetensors")
    path.write_bytes(b"\xff" * 8 + path.read_bytes()[8:])
    with pytest.raises(ValueError, match=r"w\.safetensors is not a readable safetensors file \(truncated or corrupt"):
        vitkit.load_pretrained(path)


class HoldsAClass:
    """Something a weights-only unpickler refuses to build."""


def test_a_real_pickle_that_needs_classes_is_still_refused_as_such(tmp_path: Path) -> None:
    """Telling garbage from pickles must not turn the weights-only refusal into 'corrupt' (nor the reverse)."""
    torch.save({"model": tiny_vit().state_dict(), "args": HoldsAClass()}, tmp_path / "r.pt")
    with pytest.raises(ValueError, match=r"r\.pt holds a pickle that needs more than tensors.*trust_pickle=True"):
        read_state_dict(tmp_path / "r.pt")
    _text(tmp_path / "t.pt")
    with pytest.raises(ValueError, match=r"t\.pt is not a readable PyTorch checkpoint") as err:
        read_state_dict(tmp_path / "t.pt", trust_pickle=True)  # text is no pickle: nothing to trust, nothing run
    assert "trust_pickle" not in str(err.value)


def test_npz_of_other_than_numeric_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "names.npz", labels=np.array(["cat", "dog"]))
    with pytest.raises(ValueError, match=r"names\.npz: array 'labels' has dtype <U3"):
        read_state_dict(tmp_path / "names.npz")


@pytest.mark.parametrize("hf_config", [False, True], ids=["vitkit-config", "hf-config"])
def test_config_without_weights(tmp_path: Path, hf_config: bool) -> None:
    directory = model_dir(tmp_path, None)
    if hf_config:
        (directory / "config.json").write_text(json.dumps(HF_CONFIG))
    for load in (vitkit.load_pretrained, load_checkpoint):
        with pytest.raises(FileNotFoundError, match=r"holds no weights vitkit knows.*it has: config\.json") as err:
            load(directory)
        assert str(directory) in str(err.value)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_tensors_where_weights_belong(tmp_path: Path, dtype: torch.dtype) -> None:
    """load_state_dict would cast them into the float weights without a word."""
    state = {key: tensor.to(dtype) for key, tensor in tiny_vit().state_dict().items()}
    directory = model_dir(tmp_path, lambda path: save_file(state, str(path)))
    save_file(state, str(tmp_path / "timm.safetensors"))  # the same tensors as a bare file, converted on load
    name = str(dtype).removeprefix("torch.")
    for load in (lambda: vitkit.load_pretrained(directory), lambda: vitkit.load_pretrained(directory, model=tiny_vit()),
                 lambda: vitkit.load_pretrained(tmp_path / "timm.safetensors", num_heads=2)):
        with pytest.raises(ValueError, match="weights must be floating point") as err:
            load()
        message = str(err.value)
        named = [key for key in state if f"{key} is {name}" in message]
        assert named and str(tmp_path) in message, message


def test_integer_tensors_load_where_the_model_holds_integers() -> None:
    """Only a floating tensor of the model is guarded: an integer buffer (a step counter) takes integers, and
    half-precision weights still load into float32 ones."""
    model = nn.Linear(2, 2)
    model.register_buffer("steps", torch.zeros((), dtype=torch.int64))
    check_floating(model, {"steps": torch.tensor(7), "weight": torch.ones(2, 2, dtype=torch.float16)}, "ckpt")
    with pytest.raises(ValueError, match=r"ckpt: weight is int64; weights must be floating point"):
        check_floating(model, {"steps": torch.tensor(7), "weight": torch.ones(2, 2, dtype=torch.int64)}, "ckpt")


@settings(max_examples=60, **FUZZ)
@given(data=BYTES, suffix=st.sampled_from(SUFFIXES))
def test_random_bytes_through_the_api(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        state = read_state_dict(path)
    except (ValueError, FileNotFoundError) as err:
        assert str(path) in str(err), str(err)
    else:  # bytes that happen to be a tiny pickle of a dict ("}." is one): still a dict of tensors
        assert all(isinstance(v, torch.Tensor) for v in state.values())
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        vitkit.load_pretrained(path)
    assert str(path) in str(err.value), str(err.value)


# --- the command line ----------------------------------------------------------------------------


def _predict(t: Path, checkpoint: Path) -> list[str]:
    return ["predict", "--checkpoint", str(checkpoint), str(image(t))]


def _eval(t: Path, checkpoint: Path) -> list[str]:
    return ["eval", "--checkpoint", str(checkpoint)]


def _convert(t: Path, checkpoint: Path) -> list[str]:
    return ["convert", str(checkpoint), str(t / "out"), "--num-heads", "2"]


def _export(t: Path, checkpoint: Path) -> list[str]:
    return ["export", str(t / "model.pt2"), "--checkpoint", str(checkpoint)]


def _attention_map(t: Path, checkpoint: Path) -> list[str]:
    return ["attention-map", str(image(t)), "--checkpoint", str(checkpoint), "--out", str(t / "map.png")]


def _train(t: Path, checkpoint: Path) -> list[str]:
    return ["train", "--pretrained", str(checkpoint), "--epochs", "1", "--out", str(t / "run")]


FILE_COMMANDS = {"predict": _predict, "eval": _eval, "convert": _convert}  # these also take a weights file
DIR_COMMANDS = {**FILE_COMMANDS, "export": _export, "attention-map": _attention_map, "train": _train}


def one_error_line(args: list[str], *fragments: str) -> None:
    """Run the CLI; it must exit 1 with a single `error:` line holding every fragment, and no traceback."""
    result = CliRunner().invoke(app, args, env=ENV)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an exception escaping the CLI
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    missing = [f for f in fragments if f not in lines[0]]
    assert not missing, f"{missing} not in: {lines[0]}"


@pytest.mark.parametrize("command", FILE_COMMANDS)
@pytest.mark.parametrize("content", BAD_CONTENTS)
@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npz"])
def test_cli_unreadable_file(tmp_path: Path, suffix: str, content: str, command: str) -> None:
    write, says = BAD_CONTENTS[content]
    path = tmp_path / f"x{suffix}"
    write(path)
    one_error_line(FILE_COMMANDS[command](tmp_path, path), str(path), says)


@pytest.mark.parametrize("command", DIR_COMMANDS)
@pytest.mark.parametrize("content", ["html", "truncated"])
def test_cli_unreadable_weights_of_a_model_directory(tmp_path: Path, content: str, command: str) -> None:
    write, says = BAD_CONTENTS[content]
    directory = model_dir(tmp_path, write)
    one_error_line(DIR_COMMANDS[command](tmp_path, directory), str(directory / "model.safetensors"), says)


@pytest.mark.parametrize("command", DIR_COMMANDS)
@pytest.mark.parametrize("hf_config", [False, True], ids=["vitkit-config", "hf-config"])
def test_cli_config_without_weights(tmp_path: Path, hf_config: bool, command: str) -> None:
    directory = model_dir(tmp_path, None)
    if hf_config:
        (directory / "config.json").write_text(json.dumps(HF_CONFIG))
    one_error_line(DIR_COMMANDS[command](tmp_path, directory), str(directory))


@pytest.mark.parametrize("command", DIR_COMMANDS)
def test_cli_integer_weights(tmp_path: Path, command: str) -> None:
    state = {key: tensor.long() for key, tensor in tiny_vit().state_dict().items()}
    directory = model_dir(tmp_path, lambda path: save_file(state, str(path)))
    one_error_line(DIR_COMMANDS[command](tmp_path, directory), str(directory), "is int64",
                   "weights must be floating point")


@settings(max_examples=15, **FUZZ)
@given(data=BYTES, suffix=st.sampled_from(SUFFIXES), command=st.sampled_from(sorted(FILE_COMMANDS)))
def test_random_bytes_through_the_cli(tmp_path: Path, data: bytes, suffix: str, command: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    one_error_line(FILE_COMMANDS[command](tmp_path, path), str(path))
