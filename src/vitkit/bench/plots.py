"""PNG charts of benchmark reports (matplotlib, Agg backend: no display needed), written atomically."""

from __future__ import annotations

import os
from typing import Any

from ..runtime import atomic_path
from .report import packing_label


def _figure(ncols: int, width: float = 6.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path: str | os.PathLike) -> None:
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)  # a failed save must not leak the figure either


def plot_model(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Bars of img/s per candidate, one panel per mode, each bar labelled with its ratio to the baseline."""
    s = report["settings"]
    modes = report["settings"]["modes"]
    plt, fig, axes = _figure(len(modes), width=max(5.0, 1.2 * len(report["rows"]) / len(modes) + 2))
    for ax, mode in zip(axes, modes, strict=True):
        rows = [row for row in report["rows"] if row["mode"] == mode and row["status"] == "ok"]
        names = [row["candidate"] for row in rows]
        colors = ["tab:blue" if name.startswith("vitkit") else "tab:gray" for name in names]
        bars = ax.bar(names, [row["img_per_s"] for row in rows], color=colors)
        ax.bar_label(bars, labels=[f"{row['ratio']:.2f}×" for row in rows], padding=2)
        ax.set_title(f"{s['model']} · {mode} · batch {s['batch_size']} · {s['precision']}\n"
                     f"(labels: throughput ratio to {report['baselines'][mode]})")
        ax.set_xlabel("candidate")
        ax.set_ylabel("images per second (median)")
        ax.tick_params(axis="x", labelrotation=30)
        ax.margins(y=0.15)
    _save(plt, fig, path)


def plot_attention(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Kernel time (forward, forward+backward) and peak memory against the token count, one line per backend."""
    s = report["settings"]
    panels = [("fwd", "ms"), ("fwd+bwd", "ms"), ("fwd", "peak_mem_mb"), ("fwd+bwd", "peak_mem_mb")]
    backends = list(dict.fromkeys(row["backend"] for row in report["rows"]))
    plt, fig, axes = _figure(len(panels), width=4.5)
    from matplotlib.ticker import LogFormatter

    for ax, (pass_, key) in zip(axes, panels, strict=True):
        for index, backend in enumerate(backends):
            points = [(row["tokens"], row[key]) for row in report["rows"]
                      if row["backend"] == backend and row["pass"] == pass_ and row[key] is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=backend, color=f"C{index}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Plain numbers (300, 6) on the log axis, not 3 x 10^2 / 6 x 10^0.
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))
        ax.set_xticks(list(s["tokens"]), [str(n) for n in s["tokens"]])
        ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        ax.set_xlabel("tokens")
        ax.set_ylabel("milliseconds (median)" if key == "ms" else "peak tensor memory (MiB)")
        ax.set_title(f"{pass_} {'time' if key == 'ms' else 'memory'} · {s['heads']}×{s['head_dim']} · "
                     f"{s['precision']}")
        if ax.lines:
            ax.legend()
    _save(plt, fig, path)


def plot_memory(report: dict[str, Any], path: str | os.PathLike) -> None:
    """The memory/time trade-off of gradient checkpointing: peak memory and step time per recomputed blocks."""
    s = report["settings"]
    rows = [row for row in report["rows"] if row["status"] == "ok"]
    plt, fig, (ax,) = _figure(1, width=7.0)
    levels = [row["recomputed"] for row in rows]
    memory = [row["tensor_mem_mb"] for row in rows]
    times = [row["ms_per_step"] for row in rows]
    ax.plot(levels, memory, marker="o", color="tab:blue")
    ax.set_xlabel("blocks recomputed in backward (num_recomputing_layers)")
    ax.set_ylabel("peak tensor memory in a training step (MiB)", color="tab:blue")
    ax.set_ylim(0, 1.15 * max(memory, default=1.0))
    ax.set_xticks(levels)
    twin = ax.twinx()
    twin.plot(levels, times, marker="s", color="tab:red")
    twin.set_ylabel("milliseconds per training step (median)", color="tab:red")
    twin.set_ylim(0, 1.15 * max(times, default=1.0))
    ax.set_title(f"{s['model']} · batch {s['batch_size']} · {s['precision']} · {s['device']}")
    _save(plt, fig, path)


def plot_packing(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Each way's real tokens per second (labelled with its ratio to one-at-a-time) and peak tensor memory
    (labelled with its ratio to padded)."""
    s = report["settings"]
    rows = [row for row in report["rows"] if row["status"] == "ok"]
    plt, fig, axes = _figure(2, width=5.5)
    names = [packing_label(row) for row in rows]
    colors = ["tab:blue" if row["way"] == "packed" else "tab:gray" for row in rows]
    for ax, key, ratio, label in ((axes[0], "tokens_per_s", "vs_one", "real image tokens per second"),
                                  (axes[1], "tensor_mem_mb", "mem_vs_padded", "peak tensor memory (MiB)")):
        bars = ax.bar(names, [row[key] or 0.0 for row in rows], color=colors)
        ax.bar_label(bars, labels=[f"{row[ratio]:.2f}×" if row[ratio] else "" for row in rows], padding=2)
        ax.set_ylabel(label)
        ax.set_xlabel("way (packed: max_tokens)")
        ax.tick_params(axis="x", labelrotation=30)
    fig.suptitle(f"{s['model']} {s['mode']} · {s['images']} images, sides {s['min_side']}-{s['max_side']} px · "
                 f"{s['precision']} · {s['device']}")
    _save(plt, fig, path)


def plot_tower(report: dict[str, Any], path: str | os.PathLike) -> None:
    """Each way's patch tokens per second, labelled with its img/s and its ratio to transformers."""
    s = report["settings"]
    rows = report["rows"]
    plt, fig, (ax,) = _figure(1, width=8.0)
    colors = ["tab:blue" if row["way"].startswith("vitkit") else "tab:gray" for row in rows]
    bars = ax.bar([row["way"] for row in rows], [row["tokens_per_s"] for row in rows], color=colors)
    ax.bar_label(bars, labels=[f"{row['img_per_s']:.2f} img/s · {row['ratio']:.2f}×" for row in rows], padding=2)
    ax.set_ylabel("patch tokens per second (median)")
    ax.margins(y=0.15)
    ax.set_title(f"{s['model']} at {s['depth']} blocks · {s['images']} images, raw sides {s['min_side']}-"
                 f"{s['max_side']} px · {s['precision']} · {s['device']}\n(labels: img/s and ratio to transformers)")
    _save(plt, fig, path)
