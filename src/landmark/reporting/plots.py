"""Pictures of a run: training curves and per-class accuracy histogram (PNG)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_training_curves(history: pd.DataFrame, path: str | Path) -> None:
    """Loss, accuracy and GAP per epoch, train and validation, stage boundaries dashed.

    Args:
        history: one row per epoch with ``epoch`` (1-based), ``stage`` and the columns
            ``train_loss, val_loss, train_accuracy, val_accuracy, train_gap, val_gap``.
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, metric in zip(axes, ("loss", "accuracy", "gap")):
        for split, style in (("train", "-o"), ("val", "-s")):
            column = f"{split}_{metric}"
            if column in history and history[column].notna().any():
                ax.plot(history["epoch"], history[column], style, label=split, markersize=4)
        starts = history.groupby("stage", sort=False)["epoch"].min().iloc[1:]
        for stage, epoch in starts.items():
            ax.axvline(epoch - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.text(epoch - 0.45, ax.get_ylim()[1], str(stage), va="top", fontsize=8, color="grey")
        ax.set_title(metric.upper() if metric == "gap" else metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_per_class_accuracy(table: pd.DataFrame, path: str | Path) -> None:
    """Histogram of per-class accuracy (``accuracy`` column, one row per class)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(table["accuracy"], bins=[i / 10 for i in range(11)], edgecolor="black")
    ax.set_xlabel("per-class accuracy")
    ax.set_ylabel("classes")
    ax.set_title(f"Per-class accuracy ({len(table)} classes, mean {table['accuracy'].mean():.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
