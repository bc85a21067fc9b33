"""`vitkit doctor`: versions, devices, which attention backends can run here (and why not), and whether
torch.compile and ONNX export work here (each tried live)."""

from __future__ import annotations

import platform
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from .. import __version__
from .app import app
from .output import console, echo_json, print_table

DTYPES = ("float32", "bfloat16")  # torch dtypes the attention backends are checked for
NOT_INSTALLED = "not installed"


def _dist_version(name: str) -> str | None:
    """A distribution's installed version from its metadata; never imports it (flash_attn is slow/fragile)."""
    import importlib.metadata  # here, not at the top: it costs `vitkit --help` a twentieth of a second

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cudnn_version() -> str | None:
    """cuDNN as 'major.minor.patch' (torch reports 8902 for 8.9.2, 92400 for 9.24.0), or None."""
    import torch

    if not torch.backends.cudnn.is_available() or (raw := torch.backends.cudnn.version()) is None:
        return None
    major, rest = divmod(raw, 10_000 if raw >= 90_000 else 1_000)
    return f"{major}.{rest // 100}.{rest % 100}"


def _fa3_version() -> str | None:
    """FlashAttention-3 ships under several distribution names; its `flash_attn_interface` module is what counts."""
    for dist in ("flash_attn_3", "flashattn_hopper"):  # metadata lookups normalise - and _
        if (found := _dist_version(dist)) is not None:
            return found
    import importlib.util

    # find_spec locates a top-level module without executing it.
    return "found (flash_attn_interface)" if importlib.util.find_spec("flash_attn_interface") else None


def versions() -> dict[str, str | None]:
    """Versions that decide which kernels exist: None where a component is absent."""
    import torch

    return {
        "python": platform.python_version(),
        "vitkit": __version__,
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": _cudnn_version(),
        "flash_attn": _dist_version("flash_attn"),
        "flash_attn_3": _fa3_version(),
        "xformers": _dist_version("xformers"),
        "onnx": _dist_version("onnx"),
        "onnxscript": _dist_version("onnxscript"),
        "onnxruntime": _dist_version("onnxruntime"),
    }


def devices() -> list[dict[str, Any]]:
    """The CPU, then every visible CUDA device with its name and compute capability."""
    import torch

    found: list[dict[str, Any]] = [
        {"device": "cpu", "name": platform.machine() or "cpu", "compute_capability": None,
         "threads": torch.get_num_threads()}
    ]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            found.append({
                "device": f"cuda:{index}",
                "name": torch.cuda.get_device_name(index),
                "compute_capability": list(torch.cuda.get_device_capability(index)),
            })
    return found


def attention_reports(device_names: list[str], head_dim: int) -> list[dict[str, Any]]:
    """One `backend_report` per (device, dtype): every backend, usable or not, and auto's choice."""
    import torch

    from ..attention import backend_report

    reports = []
    for device in device_names:
        for dtype in DTYPES:
            rows = backend_report(device, getattr(torch, dtype), head_dim=head_dim)
            reports.append({
                "device": device,
                "dtype": dtype,
                "head_dim": head_dim,
                "auto": next((row.name for row in rows if row.chosen), None),
                "backends": [
                    {"name": row.name, "usable": row.usable, "chosen": row.chosen, "reason": row.reason}
                    for row in rows
                ],
            })
    return reports


def precision_reports(device_names: list[str], rates: bool) -> list[dict[str, Any]]:
    """Per device: what `--precision auto` picks and why, and (with `rates`, a few seconds each) the GFLOP/s of
    fp32 and bf16 products at ViT-B/16's block shapes, batch 4."""
    import torch

    from ..runtime import inference_precision

    reports = []
    for name in device_names:
        device = torch.device(name)
        chosen, why = inference_precision("auto", device)
        item: dict[str, Any] = {"device": name, "auto": chosen.name, "reason": why.removeprefix("auto: ")}
        if rates:
            from ..bench.ceiling import matrix_rates

            item["gflops_per_s"] = {dtype: round(rate, 1) for dtype, rate in matrix_rates(device).items()}
        reports.append(item)
    return reports


def _describe_precision(item: dict[str, Any]) -> str:
    rates = item.get("gflops_per_s")
    measured = "" if rates is None else (
        "; matrix products at ViT-B/16's block shapes: "
        + ", ".join(f"{dtype} {rate:,.0f} GFLOP/s" for dtype, rate in rates.items()))
    return f"{item['auto']} ({item['reason']}){measured}"


def _describe_device(dev: dict[str, Any]) -> str:
    if dev["compute_capability"] is None:
        return f"{dev['name']}, {dev['threads']} torch threads"
    major, minor = dev["compute_capability"]
    return f"{dev['name']}, compute capability {major}.{minor}"


def _facts_table(title: str, facts: dict[str, str]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.title = title
    table.title_justify = "left"
    table.add_column(style="bold")
    table.add_column()
    for key, value in facts.items():
        table.add_row(Text(key), Text(value))
    return table


def _backend_table(report: dict[str, Any]) -> Table:
    table = Table(
        title=Text(f"{report['device']} · {report['dtype']} · head_dim {report['head_dim']}"),
        caption=Text(f"auto runs: {report['auto']}"),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("backend", no_wrap=True)
    table.add_column("usable", no_wrap=True)
    table.add_column("auto", no_wrap=True)
    table.add_column("what it is / why not", overflow="fold")
    for row in report["backends"]:
        usable = Text("yes", style="green") if row["usable"] else Text("no", style="red")
        table.add_row(Text(row["name"]), usable, "chosen" if row["chosen"] else "", Text(row["reason"]))
    return table


@app.command()
def doctor(
    head_dim: int = typer.Option(64, "--head-dim", help="Attention head size the backends are checked for."),
    checks: bool = typer.Option(True, "--checks/--no-checks",
                                help="Try torch.compile and an ONNX export live (a few seconds each)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Report versions, devices, which attention backends can run (and why not), and whether torch.compile and
    ONNX export work here."""
    if head_dim < 1:
        raise ValueError(f"--head-dim must be a positive integer, got {head_dim}")
    found = devices()
    report = {
        "versions": versions(),
        "devices": found,
        "precision": precision_reports([dev["device"] for dev in found], rates=checks),
        "attention": attention_reports([dev["device"] for dev in found], head_dim),
    }
    if checks:
        from ..deploy.selfcheck import check_onnx_export, check_torch_compile

        report["checks"] = {item.name: {"ok": item.ok, "detail": item.detail, "seconds": round(item.seconds, 2)}
                            for item in (check_torch_compile(), check_onnx_export())}
    if as_json:
        echo_json(report)
        return
    out = console()
    out.print(_facts_table("versions", {k: v or NOT_INSTALLED for k, v in report["versions"].items()}))
    out.print()
    facts = {dev["device"]: _describe_device(dev) for dev in found}
    if len(found) == 1 and report["versions"]["cuda_runtime"] is not None:
        facts["cuda"] = "no device visible (torch.cuda.is_available() is False)"
    out.print(_facts_table("devices", facts))
    out.print()
    out.print(_facts_table("precision (--precision auto)", {item["device"]: _describe_precision(item)
                                                            for item in report["precision"]}))
    if checks:
        out.print()
        out.print(_facts_table("checks", {name: f"{'yes' if item['ok'] else 'no'}: {item['detail']} "
                                          f"({item['seconds']:.1f} s)" for name, item in report["checks"].items()}))
    for item in report["attention"]:
        out.print()
        print_table(_backend_table(item), out=out)
