"""Nothing untrusted runs and nothing is lost: pickles need an explicit opt-in, config content is never executed
or followed outside its directory, and every file vitkit writes survives a failure mid-write."""

from __future__ import annotations

import ast
import errno
import json
import os
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path

import matplotlib.figure
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import vitkit
import vitkit.checkpoints.io as io
from vitkit.bench.report import write_json
from vitkit.checkpoints import read_state_dict
from vitkit.checkpoints.export import save_exported
from vitkit.cli import app
from vitkit.train import RunDir, TrainOptions
from vitkit.train.plots import plot_confusion, plot_curves

SRC = Path(vitkit.__file__).resolve().parent
TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, num_classes=3)


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return vitkit.VisionTransformer(**TINY).eval()


class Config:
    """A custom class, as training scripts pickle next to their weights (argparse namespaces, configs)."""

    def __init__(self, lr: float) -> None:
        self.lr = lr


class Trap:
    """Unpickling this runs code: it creates the directory `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.makedirs, (str(self.marker),)


# --- pickles --------------------------------------------------------------------------------------


def test_default_load_never_runs_the_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": tiny_vit().state_dict(), "trap": Trap(marker)}, tmp_path / "ckpt.pt")
    for load in (lambda: read_state_dict(tmp_path / "ckpt.pt"),
                 lambda: vitkit.load_pretrained(tmp_path / "ckpt.pt", num_heads=2)):
        with pytest.raises(ValueError, match=r"trust_pickle=True.*--trust-pickle.*it refers to os\.makedirs"):
            load()
    assert not marker.exists()
    with pytest.warns(UserWarning, match="runs any code"):  # the opt-in does run it: the trap is real
        read_state_dict(tmp_path / "ckpt.pt", trust_pickle=True)
    assert marker.is_dir()


def test_trust_pickle_loads_a_checkpoint_with_custom_objects(tmp_path: Path) -> None:
    model = tiny_vit()
    torch.save({"model": model.state_dict(), "config": Config(lr=1e-3), "epoch": 7}, tmp_path / "run.pth")
    with pytest.warns(UserWarning, match="trust_pickle=True"):
        # a bare state dict reads as timm's layout, eps 1e-6 unless told: say the model's own
        loaded = vitkit.load_pretrained(tmp_path / "run.pth", num_heads=2, norm_eps=model.config.norm_eps,
                                        trust_pickle=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_trust_pickle_takes_a_whole_pickled_module(tmp_path: Path) -> None:
    model = tiny_vit()
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(ValueError, match="trust_pickle"):
        read_state_dict(tmp_path / "whole.pt")
    with pytest.warns(UserWarning):
        state = read_state_dict(tmp_path / "whole.pt", trust_pickle=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_trust_pickle_names_code_that_is_not_importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A training script's class that this environment lacks: a clear error, not a ModuleNotFoundError."""
    module = types.ModuleType("vanished_trainer")
    gone = type("Args", (), {"__module__": "vanished_trainer"})
    module.Args = gone
    monkeypatch.setitem(sys.modules, "vanished_trainer", module)
    torch.save({"model": tiny_vit().state_dict(), "args": gone()}, tmp_path / "run.pt")
    monkeypatch.delitem(sys.modules, "vanished_trainer")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"not importable here.*vanished_trainer"):
        read_state_dict(tmp_path / "run.pt", trust_pickle=True)


def test_cli_trust_pickle_flag(tmp_path: Path) -> None:
    torch.save({"model": tiny_vit().state_dict(), "config": Config(1.0)}, tmp_path / "run.pt")
    args = ["convert", str(tmp_path / "run.pt"), str(tmp_path / "out"), "--num-heads", "2"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and "--trust-pickle" in refused.stderr and not (tmp_path / "out").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(app, [*args, "--trust-pickle"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "model.safetensors").is_file()


# --- config content -------------------------------------------------------------------------------


def test_no_eval_or_exec_anywhere_in_vitkit() -> None:
    """Config files are parsed as data: nothing in the package evaluates strings as code."""
    calls = [
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec")
    ]
    assert calls == []


def test_code_in_a_config_string_is_not_run(tmp_path: Path) -> None:
    save_exported(tiny_vit(), tmp_path / "timm", to="timm")
    marker = tmp_path / "pwned"
    args = json.loads((tmp_path / "timm" / "timm_args.json").read_text())
    args["objects"] = {"norm_layer": f"__import__('os').makedirs({str(marker)!r}) or torch.nn.LayerNorm",
                       "mlp_layer": f"__import__('os').makedirs({str(marker)!r})"}
    (tmp_path / "timm" / "timm_args.json").write_text(json.dumps(args))
    with pytest.raises(ValueError):  # an mlp_layer called "makedirs({marker!r})" is no layer vitkit knows
        vitkit.load_pretrained(tmp_path / "timm")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["/etc/passwd", "../model.safetensors", "shards/../../x.safetensors",
                                  "..\\x.safetensors", "C:\\weights.safetensors", ""])
def test_shard_names_never_leave_the_checkpoint_directory(tmp_path: Path, name: str) -> None:
    directory = tmp_path / "ckpt"
    vitkit.save_pretrained(tiny_vit(), directory)
    (directory / "model.safetensors").rename(tmp_path / "model.safetensors")  # the file an escape would reach
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"head.weight": name}}))
    with pytest.raises(ValueError, match="inside"):
        vitkit.load_pretrained(directory)


def test_shards_inside_the_directory_load(tmp_path: Path) -> None:
    """The rule refuses escapes only: shards in the directory (or a subfolder, or symlinked as in the Hugging
    Face cache) load."""
    model = tiny_vit()
    directory = tmp_path / "ckpt"
    vitkit.save_pretrained(model, directory)
    tensors = load_file(str(directory / "model.safetensors"))
    (directory / "model.safetensors").unlink()
    names = sorted(tensors)
    (directory / "part").mkdir()
    save_file({k: tensors[k] for k in names[:5]}, str(directory / "part" / "a.safetensors"))
    save_file({k: tensors[k] for k in names[5:]}, str(tmp_path / "blob"))
    (directory / "b.safetensors").symlink_to(tmp_path / "blob")
    weight_map = {k: "part/a.safetensors" if i < 5 else "b.safetensors" for i, k in enumerate(names)}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = vitkit.load_pretrained(directory)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


# --- atomic writes --------------------------------------------------------------------------------


def _disk_full(path: object, *args: object, **kwargs: object) -> None:
    """A serializer that dies half-way: some bytes reach the file, then the disk is full."""
    Path(str(path)).write_bytes(b"half a file")
    raise OSError(errno.ENOSPC, "No space left on device")


def _run_dir(tmp: Path) -> RunDir:
    run = RunDir(tmp)
    run.start(TrainOptions(), ["a", "b"])
    return run


STATE = {"model": {"w": torch.ones(2)}, "step": 3}
RECORDS = [{"kind": "step", "step": 1, "epoch": 0, "loss": 1.0, "lr": 0.1, "epoch_float": 0.5},
           {"kind": "epoch", "epoch": 0, "step": 2, "train_loss": 1.0, "val_loss": 1.0, "val_top1": 0.5,
            "val_top5": 1.0, "lr": 0.1}]
# (file, how vitkit writes it, what to break): one row per writer in src/vitkit.
WRITERS: list[tuple[str, Callable[[Path], object], tuple[object, str, Callable]]] = [
    ("model.safetensors", lambda t: vitkit.save_pretrained(tiny_vit(), t),
     (io, "save_file", lambda tensors, path, **kw: _disk_full(path))),
    ("config.json", lambda t: vitkit.save_pretrained(tiny_vit(), t),
     (Path, "write_text", lambda self, *a, **kw: _disk_full(self))),
    ("timm_args.json", lambda t: save_exported(tiny_vit(), t, to="timm"),
     (Path, "write_text", lambda self, *a, **kw: _disk_full(self))),
    ("train_state.pt", lambda t: _run_dir(t).save_state(STATE), (torch, "save", lambda obj, path: _disk_full(path))),
    ("last.safetensors", lambda t: _run_dir(t).save_state(STATE),
     (io, "save_file", lambda tensors, path, **kw: _disk_full(path))),
    ("metrics.jsonl", lambda t: _run_dir(t).write_metrics(RECORDS),
     (Path, "write_text", lambda self, *a, **kw: _disk_full(self))),
    ("train_options.json", lambda t: RunDir(t).start(TrainOptions(), ["a"]),
     (Path, "write_text", lambda self, *a, **kw: _disk_full(self))),
    ("curves.png", lambda t: plot_curves(RECORDS, t / "curves.png"),
     (matplotlib.figure.Figure, "savefig", lambda self, path, **kw: _disk_full(path))),
    ("confusion.png", lambda t: plot_confusion(torch.eye(2, dtype=torch.long), ["a", "b"], t / "confusion.png"),
     (matplotlib.figure.Figure, "savefig", lambda self, path, **kw: _disk_full(path))),
    ("bench.json", lambda t: write_json(t / "bench.json", {"rows": [1, 2]}),
     (Path, "write_text", lambda self, *a, **kw: _disk_full(self))),
]


@pytest.mark.parametrize(("name", "write", "breakage"), WRITERS, ids=[w[0] for w in WRITERS])
def test_a_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                                write: Callable[[Path], object], breakage: tuple) -> None:
    write(tmp_path)
    before = (tmp_path / name).read_bytes()
    monkeypatch.setattr(*breakage)
    with pytest.raises(OSError, match="No space left"):
        write(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / name).read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# Writes that are not files on disk: the benchmark worker answers its parent through a pipe.
NOT_FILES = {("bench/worker.py", "fdopen")}
WRITER_CALLS = {"save_file": 1, "save": 1, "savefig": 0, "open": 0, "fdopen": 0}  # name -> index of the path arg


def _written_path(call: ast.Call) -> tuple[str, ast.expr | None] | None:
    """(writer name, the expression naming what it writes) when `call` writes a file, else None."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if isinstance(func, ast.Attribute) and name in ("write_text", "write_bytes"):
        return name, func.value
    if name in ("open", "fdopen"):  # only when opened for writing
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        if not (isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax")):
            return None
    owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
    if name not in WRITER_CALLS or (name == "save" and owner not in ("torch", "np")):
        return None
    index = 0 if owner == "np" else WRITER_CALLS[name]
    target = call.args[index] if len(call.args) > index else None
    if isinstance(target, ast.Call) and getattr(target.func, "id", "") == "str" and target.args:
        target = target.args[0]  # str(tmp)
    return name, target


class _Audit(ast.NodeVisitor):
    """Every file write must go to a name bound by an enclosing `with atomic_path(...) as name`."""

    def __init__(self, module: str) -> None:
        self.module, self.atomic, self.unsafe = module, [], []

    def visit_With(self, node: ast.With) -> None:
        bound = [item.optional_vars.id for item in node.items
                 if isinstance(item.context_expr, ast.Call) and isinstance(item.optional_vars, ast.Name)
                 and getattr(item.context_expr.func, "id", "") == "atomic_path"]
        self.atomic += bound
        self.generic_visit(node)
        del self.atomic[len(self.atomic) - len(bound):]

    def visit_Call(self, node: ast.Call) -> None:
        written = _written_path(node)
        if written and (self.module, written[0]) not in NOT_FILES:
            target = written[1]
            if not (isinstance(target, ast.Name) and target.id in self.atomic):
                self.unsafe.append(f"{self.module}:{node.lineno} {written[0]}")
        self.generic_visit(node)


def test_every_writer_in_vitkit_goes_through_atomic_path() -> None:
    unsafe = []
    for path in sorted(SRC.rglob("*.py")):
        audit = _Audit(str(path.relative_to(SRC)))
        audit.visit(ast.parse(path.read_text()))
        unsafe += audit.unsafe
    assert unsafe == []
