"""PNG figures of a run: training curves and the confusion matrix (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..runtime import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(records: list[dict], path: Path) -> None:
    """Loss (train per step, val per epoch) and validation accuracy against epochs."""
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    if not steps:
        return
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([r["epoch_float"] for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.6, label="train")
    if epochs:
        ax_loss.plot([r["epoch"] + 1 for r in epochs], [r["val_loss"] for r in epochs], "o-", label="validation")
        ax_acc.plot([r["epoch"] + 1 for r in epochs], [100 * r["val_top1"] for r in epochs], "o-", color="C2")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_loss.legend()
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="Validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, not 2.5
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(confusion: torch.Tensor, classes: list[str], path: Path) -> None:
    """The confusion matrix as a heatmap with counts, true class by row."""
    plt = _pyplot()
    n = len(classes)
    size = max(4.0, min(16.0, 0.5 * n + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(confusion.numpy(), cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90 if n > 12 else 0)
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix")
    if n <= 30:
        limit = confusion.max().item() / 2
        for i in range(n):
            for j in range(n):
                value = int(confusion[i, j])
                if value:
                    ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                            color="white" if value > limit else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        _pyplot().close(fig)  # a failed save must not leak the figure either
