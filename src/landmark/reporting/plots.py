"""Pictures of a run: training curves and per-class accuracy (PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .analysis import label

#: Up to this many classes the per-class accuracy picture draws one named bar per class;
#: above it, a histogram.
NAMED_BARS_MAX = 30


def plot_training_curves(history: pd.DataFrame, path: str | Path) -> None:
    """Loss, accuracy and GAP per epoch, train and validation, stage boundaries dashed.

    Args:
        history: one row per epoch with ``epoch`` (1-based), ``stage`` and the columns
            ``train_loss, val_loss, train_accuracy, val_accuracy, train_gap, val_gap``.
    """
    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
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


def plot_per_class_accuracy(table: pd.DataFrame, path: str | Path | None = None,
                            names: dict[str, str] | None = None) -> Figure:
    """Per-class accuracy (``accuracy`` column, one row per class, ``landmark_id`` if known).

    With at most :data:`NAMED_BARS_MAX` classes: one horizontal bar per class, labelled with
    its landmark name (``names``, landmark_id -> name) or its id, lowest accuracy at the top,
    the value written at each bar.  With more classes: a histogram of the accuracies.

    Returns:
        the figure (a plain ``matplotlib.figure.Figure``, outside pyplot), saved to ``path`` when given.
    """
    mean = table["accuracy"].mean() if len(table) else float("nan")
    title = f"Per-class accuracy ({len(table)} classes, mean {mean:.3f})"
    if "landmark_id" in table and 0 < len(table) <= NAMED_BARS_MAX:
        rows = table.assign(landmark_id=table["landmark_id"].astype(str))
        rows = rows.sort_values(["accuracy", "landmark_id"], kind="mergesort")
        fig = Figure(figsize=(7, 0.32 * len(rows) + 1.6))
        ax = fig.subplots()
        y = np.arange(len(rows))
        ax.barh(y, rows["accuracy"], color="#4575b4")
        ax.set_yticks(y, [label(k, names or {}, 28) for k in rows["landmark_id"]], fontsize=8)
        ax.invert_yaxis()
        for yi, value in zip(y, rows["accuracy"]):
            ax.text(value, yi, f" {value:.0%}", va="center", fontsize=7)
        ax.set_xlim(0, 1.15)
        ax.set_xlabel("accuracy on the evaluation set")
        ax.grid(axis="x", alpha=0.3)
    else:
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.hist(table["accuracy"], bins=[i / 10 for i in range(11)], edgecolor="black")
        ax.set_xlabel("per-class accuracy")
        ax.set_ylabel("classes")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
