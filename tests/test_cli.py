"""The `vitkit` command line: `models`, `doctor`, `--version` and the one-line error policy.

Most tests drive `vitkit.cli.app` in-process with typer's CliRunner; the subprocess ones prove that
`python -m vitkit` works and that `import vitkit` stays free of the CLI's dependencies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import vitkit
from vitkit.checkpoints.tags import PRETRAINED
from vitkit.cli import app
from vitkit.models import model_info

SRC = Path(__file__).resolve().parents[1] / "src"
# Wide, colourless rich output whatever the terminal or CI sets: table rows stay on one line.
ENV = {"COLUMNS": "250", "TTY_COMPATIBLE": "0", "FORCE_COLOR": None, "NO_COLOR": "1"}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


def table_rows(output: str) -> dict[str, list[str]]:
    """Rows of every rich table in `output`, keyed by first cell: {'flash': ['flash', 'no', '', ...]}."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            rows.setdefault(cells[0], cells)
    return rows


def facts(output: str, title: str) -> dict[str, str]:
    """The key/value lines under a `title` line (doctor's versions and devices), up to a blank line."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title) + 1
    pairs = {}
    for line in lines[start:]:
        if not line.strip():
            break
        key, value = line.split(maxsplit=1)
        pairs[key] = value.strip()
    return pairs


def subprocess_env() -> dict[str, str]:
    """The current environment with src/ on PYTHONPATH (the package may not be installed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env.update(COLUMNS="250", NO_COLOR="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    return env


# --- models ---------------------------------------------------------------------------------------


def test_models_table_lists_registry_with_sizes():
    result = invoke("models")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert set(rows) >= set(vitkit.list_models())
    assert rows["vit_base_patch16_224"][1:] == ["86.6M", "224x224", "token"]
    assert rows["siglip_so400m_patch14_384"][1:] == ["428.2M", "384x384", "map"]
    assert rows["simple_vit_base_patch16_224"][1:] == ["86.4M", "224x224", "avg"]
    assert rows["vit_digits"][2] == "8x8"


def test_models_pattern_filters_glob_and_plain_word():
    glob = invoke("models", "siglip_so400m*")
    assert glob.exit_code == 0, glob.output
    assert set(table_rows(glob.stdout)) == {"siglip_so400m_patch14_224", "siglip_so400m_patch14_384"}

    word = invoke("models", "patch32")  # no wildcard: matches anywhere in the name
    assert word.exit_code == 0, word.output
    assert set(table_rows(word.stdout)) == {"vit_base_patch32_224"}


def test_models_json_lists_every_field():
    result = invoke("models", "vit_*", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [m["name"] for m in data] == vitkit.list_models("vit_*")
    assert all(set(m) == {"name", "params", "img_size", "global_pool"} for m in data)
    base = next(m for m in data if m["name"] == "vit_base_patch16_224")
    assert base == {"name": "vit_base_patch16_224", "params": 86_567_656,
                    "img_size": [224, 224], "global_pool": "token"}


def test_models_unknown_pattern_is_one_line_exit_1():
    result = invoke("models", "resnet*")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: no registered model matches 'resnet*'; run `vitkit models` to see them all"
    ]


@pytest.mark.parametrize("args", [["models"], ["models", "--pretrained"], ["models", "--pretrained-formats"],
                                  ["doctor", "--no-checks"]], ids=" ".join)
@pytest.mark.parametrize("columns", ["80", "50"])
def test_tables_on_a_narrow_or_piped_output_cut_no_cell(args: list[str], columns: str) -> None:
    """Piped or logged (CliRunner is no terminal) at 80 or 50 columns: every name and number whole."""
    result = CliRunner().invoke(app, args, env={**ENV, "COLUMNS": columns})
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    words = set(result.stdout.split())
    if args == ["models"]:
        assert set(vitkit.list_models()) <= words
        assert {f"{model_info(name).params / 1e6:.1f}M" for name in ("vit_digits", "vit_7b_patch16_dinov3")} <= words
    if args == ["models", "--pretrained"]:
        assert all({tag.name, tag.repo} <= words for tag in PRETRAINED.values())


# --- doctor ---------------------------------------------------------------------------------------


def test_doctor_tables_say_what_runs_on_cpu_and_why_not():
    result = invoke("doctor", "--no-checks")  # the live checks have their own tests (test_doctor_checks.py)
    assert result.exit_code == 0, result.output
    out = result.stdout
    versions = facts(out, "versions")
    assert versions["torch"] == torch.__version__ and versions["vitkit"] == vitkit.__version__
    assert {"python", "cuda_runtime", "cudnn", "flash_attn", "flash_attn_3", "xformers"} <= set(versions)
    assert facts(out, "devices")["cpu"].endswith("torch threads")
    assert "cpu · float32 · head_dim 64" in out and "cpu · bfloat16 · head_dim 64" in out
    rows = table_rows(out)
    for name in ("math", "sdpa", "flex"):
        assert rows[name][1] == "yes", rows[name]
    for name in ("flash", "xformers"):
        assert rows[name][1] == "no", rows[name]
        assert "cuda" in rows[name][3] and "fix:" in rows[name][3]
    assert [name for name, cells in rows.items() if cells[2] == "chosen"] == ["sdpa"]


def test_doctor_reports_missing_packages_as_not_installed(monkeypatch):
    import importlib.metadata

    real = importlib.metadata.version

    def fake(name: str) -> str:
        if name in ("flash_attn", "xformers"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", fake)
    result = invoke("doctor", "--no-checks")
    assert result.exit_code == 0, result.output
    versions = facts(result.stdout, "versions")
    assert versions["flash_attn"] == "not installed"
    assert versions["xformers"] == "not installed"
    if not torch.cuda.is_available():  # on CUDA the backend report itself imports them
        assert "flash_attn" not in sys.modules and "xformers" not in sys.modules


def test_doctor_json_structure():
    result = invoke("doctor", "--json", "--head-dim", "128", "--no-checks")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"versions", "devices", "precision", "attention"}
    [cpu_precision] = [r for r in data["precision"] if r["device"] == "cpu"]
    assert cpu_precision["auto"] in ("fp32", "bf16") and "bf16" in cpu_precision["reason"]
    assert "gflops_per_s" not in cpu_precision  # measured with the live checks only
    assert data["versions"]["torch"] == torch.__version__
    assert {"python", "cuda_runtime", "flash_attn", "xformers"} <= set(data["versions"])
    assert data["devices"][0]["device"] == "cpu"
    cpu = [r for r in data["attention"] if r["device"] == "cpu"]
    assert [r["dtype"] for r in cpu] == ["float32", "bfloat16"]
    for report in cpu:
        assert report["head_dim"] == 128 and report["auto"] == "sdpa"
        backends = {b["name"]: b for b in report["backends"]}
        assert all(set(b) == {"name", "usable", "chosen", "reason"} for b in backends.values())
        assert all(backends[n]["usable"] for n in ("math", "sdpa", "flex"))
        assert not backends["flash"]["usable"] and "cuda" in backends["flash"]["reason"]
        assert not backends["xformers"]["usable"] and "cuda" in backends["xformers"]["reason"]
        assert [b["name"] for b in backends.values() if b["chosen"]] == ["sdpa"]


# --- errors, --debug, --version -------------------------------------------------------------------


def test_invalid_option_value_is_one_line_without_traceback():
    result = invoke("doctor", "--head-dim", "0")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["error: --head-dim must be a positive integer, got 0"]
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback_instead():
    result = invoke("--debug", "doctor", "--head-dim", "0")
    assert result.exit_code == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "ValueError: --head-dim must be a positive integer, got 0" in result.stderr
    assert "error: " not in result.stderr


def test_backend_unavailable_and_interrupt_follow_the_policy(monkeypatch):
    from vitkit.attention import BackendUnavailableError

    for exc, line, code in (
        (BackendUnavailableError("attention backend 'flash' cannot run here\n(fix: install it)"),
         "error: attention backend 'flash' cannot run here (fix: install it)", 1),
        (KeyboardInterrupt(), "error: interrupted", 130),
    ):
        def boom(*args, exc=exc, **kwargs):
            raise exc

        monkeypatch.setattr("vitkit.attention.backend_report", boom)
        result = invoke("doctor")
        assert result.exit_code == code
        assert result.stderr.splitlines() == [line]


def test_unexpected_exceptions_are_bugs_and_propagate(monkeypatch):
    from vitkit.cli import doctor

    monkeypatch.setattr(doctor, "devices", lambda: 1 / 0)
    result = invoke("doctor")
    assert isinstance(result.exception, ZeroDivisionError)
    assert "error:" not in result.output


def test_usage_errors_exit_2():
    assert invoke("doctor", "--head-dim", "lots").exit_code == 2
    assert invoke("no-such-command").exit_code == 2


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"vitkit {vitkit.__version__}\n"


# --- real processes -------------------------------------------------------------------------------


@pytest.mark.slow
def test_python_m_vitkit_models_runs_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "vitkit", "models"],
        capture_output=True, text=True, env=subprocess_env(), timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = table_rows(proc.stdout)
    assert rows["siglip_so400m_patch14_384"][1] == "428.2M"
    assert rows["vit_base_patch16_224"][1] == "86.6M"


@pytest.mark.slow
def test_import_vitkit_does_not_import_the_cli_dependencies():
    code = "import sys, vitkit; print(sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'rich', 'click'}))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


HEAVY = {"torch", "torchvision", "matplotlib", "sklearn"}
# Builds the app; renders `--help` of it and of every command and subcommand, and a mistyped option's error; prints
# how many and what of HEAVY got imported; then runs `models` and `doctor --no-checks` and prints that again.
HELP_THEN_LIGHT_COMMANDS = """
import sys
from typer.main import get_command
from typer.testing import CliRunner
from vitkit.cli import app

def heavy():
    return sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[1:]))

runner, group = CliRunner(), get_command(app)
paths = [[]] + [[name] for name in group.commands] + [
    [name, sub] for name, command in group.commands.items() for sub in getattr(command, "commands", {})]
for path in paths:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output, (path, result.output)
    assert runner.invoke(app, [*path, "--no-such-option"]).exit_code == 2, path
print(len(paths), heavy())
for args in (["models"], ["doctor", "--no-checks"]):
    assert runner.invoke(app, args).exit_code == 0, args
print(heavy())
"""


@pytest.mark.slow
def test_help_and_usage_errors_import_nothing_heavy_and_models_doctor_only_torch():
    """`vitkit --help`, `vitkit CMD --help` and a mistyped option build the app from the commands' signatures
    alone: torch and the rest load only when a command runs, and then only what it uses."""
    proc = subprocess.run([sys.executable, "-c", HELP_THEN_LIGHT_COMMANDS, *HEAVY], capture_output=True, text=True,
                          env=subprocess_env(), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    helps, commands = proc.stdout.splitlines()
    count, imported = helps.split(maxsplit=1)
    assert int(count) >= 17 and imported == "[]"  # the app, its 12 commands and the 4 of `bench`
    assert commands == "['torch']"  # registry and attention checks need torch; no images, plots or sklearn
