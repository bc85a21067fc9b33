"""`vitkit doctor`'s export-related reports: onnx/onnxruntime versions and the live torch.compile / ONNX checks."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vitkit.cli import app
from vitkit.deploy import selfcheck

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {"COLUMNS": "250", "TTY_COMPATIBLE": "0", "FORCE_COLOR": None, "NO_COLOR": "1"}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


@pytest.mark.slow
def test_doctor_runs_both_checks_and_reports_versions():
    result = invoke("doctor", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["versions"]["onnxruntime"] == importlib.metadata.version("onnxruntime")
    assert data["versions"]["onnx"] == importlib.metadata.version("onnx")
    assert set(data["checks"]) == {"torch.compile", "onnx export"}
    for check in data["checks"].values():
        assert set(check) == {"ok", "detail", "seconds"} and check["detail"] and check["seconds"] >= 0
    onnx = data["checks"]["onnx export"]
    assert onnx["ok"] and "onnxruntime" in onnx["detail"], onnx  # the export packages are test dependencies
    compiled = data["checks"]["torch.compile"]
    assert compiled["detail"].startswith("works (inductor on" if compiled["ok"] else "fails on"), compiled
    [cpu] = [item for item in data["precision"] if item["device"] == "cpu"]
    assert set(cpu["gflops_per_s"]) == {"float32", "bfloat16"} and min(cpu["gflops_per_s"].values()) > 0, cpu


def test_doctor_table_shows_the_checks(monkeypatch):
    monkeypatch.setattr("vitkit.deploy.selfcheck.check_torch_compile",
                        lambda: selfcheck.LiveCheck("torch.compile", False, "fails on cpu: no compiler", 0.5))
    monkeypatch.setattr("vitkit.deploy.selfcheck.check_onnx_export",
                        lambda: selfcheck.LiveCheck("onnx export", True, "works (stub)", 1.25))
    monkeypatch.setattr("vitkit.bench.ceiling.matrix_rates", lambda device: {"float32": 98.5, "bfloat16": 1753.0})
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"cpu_name": "Test Xeon", "amx_bf16": True})
    result = invoke("doctor")
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    start = lines.index("checks")
    assert lines[start + 1].split() == ["torch.compile", "no:", "fails", "on", "cpu:", "no", "compiler", "(0.5", "s)"]
    assert lines[start + 2].split() == ["onnx", "export", "yes:", "works", "(stub)", "(1.2", "s)"]
    assert "onnxruntime" in result.stdout and "onnxscript" in result.stdout  # versions
    precision = " ".join(result.stdout.split("precision (--precision auto)")[1].split("\n\n")[0].split())
    assert precision.startswith("cpu bf16 (Test Xeon has amx_bf16); matrix products at ViT-B/16's block shapes: "
                                "float32 98 GFLOP/s, bfloat16 1,753 GFLOP/s"), precision


def test_no_checks_leaves_them_out():
    result = invoke("doctor", "--json", "--no-checks")
    assert result.exit_code == 0, result.output
    assert "checks" not in json.loads(result.stdout)


def test_compile_check_reports_why_it_fails(monkeypatch):
    def broken(fn, **kwargs):
        raise RuntimeError("Compiler: cc is not found\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    check = selfcheck.check_torch_compile("cpu")
    assert not check.ok and check.detail == "fails on cpu: RuntimeError: Compiler: cc is not found"


def test_compile_check_catches_wrong_results(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: (lambda x: fn(x) + 1.0))
    check = selfcheck.check_torch_compile("cpu")
    assert not check.ok and "differs from eager" in check.detail


def test_onnx_check_names_missing_packages(monkeypatch):
    real = selfcheck.importlib.util.find_spec
    monkeypatch.setattr(selfcheck.importlib.util, "find_spec",
                        lambda name: None if name == "onnxruntime" else real(name))
    check = selfcheck.check_onnx_export()
    assert not check.ok and check.detail == "needs onnxruntime: pip install 'vitkit[export]'"


def test_onnx_check_reports_an_export_failure(monkeypatch):
    import vitkit.deploy.onnx as onnx_export

    def fail(*args, **kwargs):
        raise ValueError("the ONNX export of tiny.onnx does not match PyTorch")

    monkeypatch.setattr(onnx_export, "export_onnx", fail)
    check = selfcheck.check_onnx_export()
    assert not check.ok and check.detail == "fails: ValueError: the ONNX export of tiny.onnx does not match PyTorch"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="torch says it only where no CUDA device is visible")
def test_doctor_on_a_cpu_machine_with_a_cuda_toolkit_prints_no_cuda_home_notice(tmp_path: Path) -> None:
    """torch.utils.cpp_extension, first imported by the compile check, logs 'No CUDA runtime is found, using
    CUDA_HOME=...' to stderr wherever CUDA_HOME is set and no device is visible; a fresh process imports it anew."""
    env = {**os.environ, "CUDA_HOME": str(tmp_path), "PYTHONPATH": os.pathsep.join(
        p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-m", "vitkit", "doctor"], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "torch.compile  yes: works" in proc.stdout, proc.stdout  # the check that imports it did run
    assert "No CUDA runtime" not in proc.stderr, proc.stderr


def test_only_the_cuda_home_notice_is_dropped_and_only_inside_the_block() -> None:
    logger = logging.getLogger("torch.utils.cpp_extension")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        with selfcheck.without_cuda_home_notice():
            logger.warning("No CUDA runtime is found, using CUDA_HOME='/usr/local/cuda'")
            logger.warning("Error building extension 'fused': nvcc not found")
        logger.warning("No CUDA runtime is found, using CUDA_HOME='/usr/local/cuda'")
    finally:
        logger.removeHandler(handler)
    assert seen == ["Error building extension 'fused': nvcc not found",
                    "No CUDA runtime is found, using CUDA_HOME='/usr/local/cuda'"]
