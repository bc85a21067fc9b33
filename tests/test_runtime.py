"""The rooms import one way: runtime at the bottom, cli at the top, no room importing a room above it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import vitkit
import vitkit.checkpoints
import vitkit.runtime

SRC = Path(vitkit.__file__).resolve().parent
# Floors from the bottom up; a room may import its own floor's rooms only where a floor holds one room. The tools
# share `data`'s image pipeline and otherwise stay out of each other, so `data` stands one floor below them.
FLOORS = [("runtime",), ("attention",), ("layers",), ("packing",), ("models",), ("checkpoints",), ("data",),
          ("train", "embeddings", "deploy", "explain", "bench"), ("cli",)]
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def _imported_rooms(path: Path) -> list[tuple[int, str]]:
    """(line, room) for every vitkit room that the module at `path` imports, relative or absolute, at any depth."""
    package = list(path.relative_to(SRC.parent).parts[:-1])  # ['vitkit', 'train']
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            names = [[*module, alias.name] for alias in node.names] if module == ["vitkit"] else [module]
        else:
            continue
        found += [(node.lineno, name[1]) for name in names if len(name) > 1 and name[0] == "vitkit"]
    return [(line, room) for line, room in found if room in FLOOR]


def _room_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if len(p.relative_to(SRC).parts) > 1)


def test_every_room_is_on_a_floor() -> None:
    rooms = {p.relative_to(SRC).parts[0] for p in _room_modules()} - {"__pycache__"}
    assert rooms == set(FLOOR)


@pytest.mark.parametrize("path", _room_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_room_imports_a_room_above_it(path: Path) -> None:
    room = path.relative_to(SRC).parts[0]
    upward = [f"line {line}: {room} -> {other}" for line, other in _imported_rooms(path)
              if other != room and room != "cli" and FLOOR[other] >= FLOOR[room]]
    assert upward == []


def test_runtime_imports_nothing_of_vitkit() -> None:
    """Loaded on its own as a top-level package, each runtime module imports, and brings in no vitkit module."""
    runtime = SRC / "runtime"
    modules = sorted(p.stem for p in runtime.glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('runtime', {str(runtime / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(runtime)!r}])\n"
        "sys.modules['runtime'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(sys.modules['runtime'])\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('runtime.' + name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'vitkit'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert modules == ["distributed", "files", "inference", "logs", "precision", "workers"]
    assert done.stdout.strip() == "[]"


def test_checkpoints_atomic_path_is_the_runtime_one() -> None:
    assert vitkit.checkpoints.atomic_path is vitkit.runtime.atomic_path


def test_auto_precision_is_bf16_only_where_the_device_multiplies_it_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from vitkit.runtime import inference_precision, native_bf16

    def resolve(name: str, device: torch.device) -> tuple[str, str]:
        chosen, why = inference_precision(name, device)
        return chosen.name, why

    cpu = torch.device("cpu")
    flags = {"cpu_name": "Test CPU", "amx_bf16": False, "avx512_bf16": False}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: dict(flags))
    assert resolve("auto", cpu) == ("fp32", "auto: Test CPU has neither amx_bf16 nor avx512_bf16: bf16 would run "
                                            "emulated, slower than fp32")
    flags["amx_bf16"] = True
    assert resolve("auto", cpu) == ("bf16", "auto: Test CPU has amx_bf16")
    flags.update(amx_bf16=False, avx512_bf16=True)
    assert native_bf16(cpu) == (True, "Test CPU has avx512_bf16")
    assert resolve("fp16", cpu) == ("fp16", "as asked")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert resolve("auto", torch.device("cuda")) == (
        "fp32", "auto: CUDA compute capability 7.5 has no bf16 tensor cores (8.0+)")
    with pytest.raises(ValueError, match="--precision must be auto or one of fp32, bf16"):
        resolve("int4", cpu)


def test_without_log_message_drops_only_that_message_only_inside_the_block() -> None:
    import logging

    from vitkit.runtime import without_log_message

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    root = logging.getLogger()
    handler = Keep()
    root.addHandler(handler)
    try:
        with without_log_message("", "consider to run pre-processing"):
            root.warning("Please consider to run pre-processing before quantization.")
            root.warning("Quantization failed: unsupported op")
        root.warning("Please consider to run pre-processing before quantization.")
    finally:
        root.removeHandler(handler)
    assert seen == ["Quantization failed: unsupported op", "Please consider to run pre-processing before quantization."]
