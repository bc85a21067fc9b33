"""Every PNG figure vitkit draws (training curves, confusion matrix, benchmark charts) is written, and every panel
has both axes labelled."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vitkit.bench import plots as bench_plots
from vitkit.train import plots as train_plots


@pytest.fixture
def captured(monkeypatch):
    """The figures the plot functions save, kept open for inspection (they are still written to disk)."""
    figures = []
    real_train, real_bench = train_plots._save, bench_plots._save

    def keep_train(fig, path):
        figures.append(fig)
        real_train(fig, path)

    def keep_bench(plt, fig, path):
        figures.append(fig)
        real_bench(plt, fig, path)

    monkeypatch.setattr(train_plots, "_save", keep_train)
    monkeypatch.setattr(bench_plots, "_save", keep_bench)
    return figures


def assert_labelled(fig) -> None:
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert axes
    for ax in axes:
        assert ax.get_xlabel() or ax.get_shared_x_axes().get_siblings(ax) != [ax], ax
        assert ax.get_ylabel(), ax


def assert_png(path, min_width=300) -> None:
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size[0] >= min_width and png.size[1] >= 200


def test_training_curves_and_confusion_matrix(tmp_path, captured):
    records = [{"kind": "step", "epoch_float": i / 10, "loss": 2.3 - i / 20} for i in range(30)]
    records += [{"kind": "epoch", "epoch": e, "val_loss": 2.0 - e / 2, "val_top1": 0.3 + e / 5} for e in range(3)]
    train_plots.plot_curves(records, tmp_path / "curves.png")
    train_plots.plot_confusion(torch.tensor([[5, 1, 0], [0, 4, 2], [1, 0, 6]]), ["a", "b", "c"],
                               tmp_path / "confusion.png")
    assert len(captured) == 2
    curves, confusion = captured
    assert [ax.get_xlabel() for ax in curves.axes] == ["epoch", "epoch"]
    assert [ax.get_ylabel() for ax in curves.axes] == ["cross-entropy loss", "top-1 accuracy (%)"]
    assert all(tick == int(tick) for tick in curves.axes[1].get_xticks())  # whole epochs
    main = confusion.axes[0]
    assert (main.get_xlabel(), main.get_ylabel()) == ("predicted class", "true class")
    assert [t.get_text() for t in main.get_xticklabels()] == ["a", "b", "c"]
    for fig in captured:
        assert_labelled(fig)
    assert_png(tmp_path / "curves.png")
    assert_png(tmp_path / "confusion.png")


def test_benchmark_charts(tmp_path, captured):
    rows = [{"mode": "infer", "status": "ok", "candidate": name, "img_per_s": speed, "ratio": speed / 10.0}
            for name, speed in (("vitkit", 12.0), ("timm", 10.0), ("hf", 8.0))]
    model = {"settings": {"model": "vit_tiny", "modes": ["infer"], "batch_size": 4, "precision": "fp32"},
             "rows": rows, "baselines": {"infer": "timm"}}
    bench_plots.plot_model(model, tmp_path / "model.png")
    attention_rows = [
        {"backend": backend, "pass": pass_, "tokens": n, "ms": ms * n / 100, "peak_mem_mb": ms * n / 50}
        for backend, ms in (("math", 3.0), ("sdpa", 1.0)) for pass_ in ("fwd", "fwd+bwd") for n in (197, 577)
    ]
    attention = {"settings": {"tokens": [197, 577], "heads": 12, "head_dim": 64, "precision": "fp32"},
                 "rows": attention_rows}
    bench_plots.plot_attention(attention, tmp_path / "attention.png")
    memory = {"settings": {"model": "vit_tiny", "batch_size": 8, "precision": "fp32", "device": "cpu"},
              "rows": [{"status": "ok", "recomputed": r, "tensor_mem_mb": 300 - 15 * r, "ms_per_step": 100 + 9 * r}
                       for r in (0, 6, 12)]}
    bench_plots.plot_memory(memory, tmp_path / "memory.png")
    assert len(captured) == 3
    for fig in captured:
        assert_labelled(fig)
    bars = captured[0].axes[0]
    assert bars.get_ylabel() == "images per second (median)"
    assert [t.get_text() for t in bars.texts] == ["1.20×", "1.00×", "0.80×"]  # ratio labels on the bars
    for name in ("model", "attention", "memory"):
        assert_png(tmp_path / f"{name}.png")
