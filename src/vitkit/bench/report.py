"""Benchmark reports for people (rich tables) and machines (JSON files, written atomically)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from rich.table import Table
from rich.text import Text

from ..runtime import write_text

_STATUS_STYLE = {"ok": "green", "skipped": "yellow", "failed": "red"}
_MEMORY_NOTE = ("peak MB: CUDA's peak allocation, or on CPU the process's peak resident set; tensor MB: the most "
                "memory tensors held during a step (weights, optimizer state, batch, activations)")


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """`data` as indented JSON at `path`, atomically (a half-written file never appears)."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def _num(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _sig(value: float | None) -> str:
    """At least three significant digits, never in exponent form: 0.00447, 4.61, 1,234."""
    if value is None:
        return ""
    digits = 2 - math.floor(math.log10(abs(value))) if value else 0
    return f"{value:,.{max(digits, 0)}f}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def _status(row: dict[str, Any]) -> Text:
    return Text(row["status"], style=_STATUS_STYLE.get(row["status"], ""))


def _machine_caption(machine: dict[str, Any]) -> str:
    return (f"{machine['device']} · {machine['torch_threads']} torch threads · torch {machine['torch']} · "
            f"vitkit {machine['vitkit']}")


def _remarks(rows: list[dict[str, Any]], key: str, part: str | None = None) -> list[str]:
    """One line per distinct reason (rows that did not run) or note (rows that did), named by `key`;
    the `part` (mode or pass) is named only when the remark does not hold for all of the key's rows."""
    groups: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        text = row["reason"] if row["status"] != "ok" else row.get("notes", "")
        if text:
            groups.setdefault((str(row[key]), text), []).append(str(row[part]) if part else "")
    lines = []
    for (name, text), parts in groups.items():
        every = {str(row[part]) for row in rows if str(row[key]) == name} if part else set()
        scope = f" ({', '.join(dict.fromkeys(parts))})" if part and set(parts) != every else ""
        lines.append(f"{name}{scope}: {text}")
    return lines


def _ceilings(rows: list[dict[str, Any]]) -> str:
    """The matmul rates the rows measured, per mode: '98.1 GFLOP/s' or a range '95.0-102 GFLOP/s'."""
    parts = []
    for mode in dict.fromkeys(row["mode"] for row in rows):
        rates = [row["ceiling_gflops_per_s"] for row in rows if row["mode"] == mode and row["status"] == "ok"]
        if rates:
            low, high = _sig(min(rates)), _sig(max(rates))
            parts.append(f"{mode} {low if low == high else low + '-' + high} GFLOP/s")
    return " · ".join(parts) or "none ran"


def model_table(report: dict[str, Any]) -> Table:
    """One row per candidate and mode: speed, spread, memory, FLOPs, efficiency and the ratio."""
    s = report["settings"]
    title = (f"{s['model']} · batch {s['batch_size']} · {s['precision']} · {s['device']}"
             f"{' · compiled' if s['compile'] else ''}"
             f"{' · ' + str(s['grad_checkpointing']) + ' blocks recomputed' if s['grad_checkpointing'] else ''}")
    ratio_vs = " · ".join(f"{mode}: {base}" for mode, base in report["baselines"].items() if base)
    caption = "\n".join([
        f"eff. = GFLOP/s over same-shape matmuls timed right after the steps ({_ceilings(report['rows'])}); "
        f"ratio = img/s over {ratio_vs or 'n/a'}",
        _MEMORY_NOTE,
        *_remarks(report["rows"], "candidate", "mode"),
        _machine_caption(report["machine"]),
    ])
    table = Table(title=Text(title), caption=Text(caption), title_justify="left", caption_justify="left")
    for name, justify in (("candidate", "left"), ("mode", "left"), ("status", "left"), ("img/s", "right"),
                          ("ms/step", "right"), ("IQR", "right"), ("peak MB", "right"), ("tensor MB", "right"),
                          ("GFLOP/img", "right"),
                          ("GFLOP/s", "right"), ("eff.", "right"), ("ratio", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for row in report["rows"]:
        table.add_row(
            Text(row["candidate"]), row["mode"], _status(row), _num(row["img_per_s"]), _num(row["ms_per_step"]),
            "" if row["spread_pct"] is None else f"{row['spread_pct']:.0f}%", _num(row["peak_mem_mb"], 0),
            _num(row["tensor_mem_mb"], 0), _sig(row["gflops_per_image"]), _sig(row["gflops_per_s"]),
            _pct(row["efficiency"]),
            "" if row["ratio"] is None else f"{row['ratio']:.2f}",
        )
    return table


def _collapse_unrunnable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A backend that ran nothing, for one reason, becomes a single row (tokens and pass 'all')."""
    out: list[dict[str, Any]] = []
    for backend in dict.fromkeys(row["backend"] for row in rows):
        own = [row for row in rows if row["backend"] == backend]
        if all(row["status"] != "ok" for row in own) and len({row["reason"] for row in own}) == 1:
            out.append({**own[0], "tokens": "all", "pass": "all"})
        else:
            out += own
    return out


def attention_table(report: dict[str, Any]) -> Table:
    """One row per backend, token count and pass: kernel time, spread, memory and FLOP/s."""
    s = report["settings"]
    title = (f"attention · batch {s['batch_size']} · {s['heads']} heads × {s['head_dim']} · {s['precision']} · "
             f"{s['device']}")
    caption = "\n".join([*_remarks(report["rows"], "backend", "pass"), _machine_caption(report["machine"]),
                         "memory: peak of the tensors made by the call (inputs excluded)"])
    table = Table(title=Text(title), caption=Text(caption), title_justify="left", caption_justify="left")
    for name, justify in (("backend", "left"), ("tokens", "right"), ("pass", "left"), ("status", "left"),
                          ("ms", "right"), ("IQR", "right"), ("peak MB", "right"), ("GFLOP/s", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for row in _collapse_unrunnable(report["rows"]):
        table.add_row(
            Text(row["backend"]), str(row["tokens"]), row["pass"], _status(row), _num(row["ms"], 2),
            "" if row["spread_pct"] is None else f"{row['spread_pct']:.0f}%", _sig(row["peak_mem_mb"]),
            _sig(row["gflops_per_s"]),
        )
    return table


def memory_table(report: dict[str, Any]) -> Table:
    """One row per number of recomputed blocks: peak training memory and step time, each against none."""
    s = report["settings"]
    title = f"{s['model']} training · batch {s['batch_size']} · {s['precision']} · {s['device']}"
    caption = "\n".join([*_remarks(report["rows"], "recomputed"), _MEMORY_NOTE,
                         "ratios (of tensor MB and ms/step) against the first row",
                         _machine_caption(report["machine"])])
    table = Table(title=Text(title), caption=Text(caption), title_justify="left", caption_justify="left")
    for name in ("recomputed", "status", "peak MB", "tensor MB", "mem × none", "ms/step", "IQR", "time × none"):
        table.add_column(name, justify="left" if name == "status" else "right", no_wrap=True)
    for row in report["rows"]:
        table.add_row(
            str(row["recomputed"]), _status(row), _num(row["peak_mem_mb"], 0), _num(row["tensor_mem_mb"], 0),
            _num(row["mem_vs_none"], 2),
            _num(row["ms_per_step"]), "" if row["spread_pct"] is None else f"{row['spread_pct']:.0f}%",
            _num(row["time_vs_none"], 2),
        )
    return table


def packing_label(row: dict[str, Any]) -> str:
    """'packed 1024', 'padded', 'one at a time': a packing row's way."""
    return row["way"] if row["max_tokens"] is None else f"{row['way']} {row['max_tokens']}"


def packing_table(report: dict[str, Any]) -> Table:
    """Packed at each max_tokens, padded to the largest, one at a time: real tokens per second, padding, tensor
    memory, and the ratios to one-at-a-time and padded."""
    s = report["settings"]
    title = (f"{s['model']} {s['mode']} · {s['images']} images, sides {s['min_side']}-{s['max_side']} px "
             f"(step {s['side_step']}) · {s['precision']} · {s['device']}")
    caption = "\n".join([
        "tokens/s counts real image tokens (prefix + patches of each image at its own size); padding is work, "
        "not output. × one / × padded: tokens/s over one-at-a-time / over padded",
        "tensor MB: the most memory tensors held during one step",
        *[f"{packing_label(row)}: skipped, {row['reason']}" for row in report["rows"] if row["status"] != "ok"],
        _machine_caption(report["machine"]),
    ])
    table = Table(title=Text(title), caption=Text(caption), title_justify="left", caption_justify="left")
    for name in ("way", "calls", "sequences", "tokens run", "padding", "ms/step", "IQR", "tokens/s", "tensor MB",
                 "× one", "× padded", "mem × padded"):
        table.add_column(name, justify="left" if name == "way" else "right", no_wrap=True)
    for row in report["rows"]:
        if row["status"] != "ok":
            continue
        table.add_row(
            packing_label(row), str(row["calls"]), str(row["sequences"]), f"{row['tokens_processed']:,}",
            f"{row['padding_pct']:.0f}%", _num(row["ms_per_step"]), f"{row['spread_pct']:.0f}%",
            _num(row["tokens_per_s"], 0), _num(row["tensor_mem_mb"], 0), _num(row["vs_one"], 2),
            _num(row["vs_padded"], 2), _num(row["mem_vs_padded"], 2),
        )
    return table


def tower_table(report: dict[str, Any]) -> Table:
    """vitkit's packed tower and transformers' on the same images and weights: speed, tokens/s and the ratio."""
    s, tower = report["settings"], report["tower"]
    blocks = (f"full attention in {tower['full_attention_blocks']}, windows of {tower['window_size']} patches elsewhere"
              if tower["window_size"] else f"deepstack {tower['deepstack'] or 'none'}")
    title = (f"{s['model']} at {s['depth']} blocks, {tower['embed_dim']} wide · {s['images']} images, raw sides "
             f"{s['min_side']}-{s['max_side']} px, smart_resize · {s['precision']} · {s['device']}")
    caption = "\n".join([
        f"{blocks}; {report['patch_tokens']:,} patch tokens -> {report['merged_tokens']:,} merged; tokens/s counts "
        "patch tokens",
        f"max |difference| of the merged tokens, vitkit vs transformers (fp32): {report['max_abs_diff']:.2e} "
        f"(tolerance {report['tolerance']:g}); ratio = img/s over transformers'",
        _machine_caption(report["machine"]),
    ])
    table = Table(title=Text(title), caption=Text(caption), title_justify="left", caption_justify="left")
    for name in ("way", "img/s", "tokens/s", "ms/step", "IQR", "ratio", "how"):
        table.add_column(name, justify="left" if name in ("way", "how") else "right", no_wrap=name != "how")
    for row in report["rows"]:
        table.add_row(Text(row["way"]), _num(row["img_per_s"], 2), _num(row["tokens_per_s"], 0),
                      _num(row["ms_per_step"]), f"{row['spread_pct']:.0f}%", f"{row['ratio']:.2f}", Text(row["notes"]))
    return table
