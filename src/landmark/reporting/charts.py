"""Charts of a run and its evaluation (PNG): training curves, per-class accuracy, class
sizes, accuracy against class size and confidence histograms."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .analysis import label

#: Up to this many classes the per-class accuracy picture draws one named bar per class;
#: above it, a histogram.
NAMED_BARS_MAX = 30

#: Colours of captions and bars: correct, wrong, neutral.
GREEN, RED, GREY = "#1a9850", "#d73027", "#555555"


#: Up to this many epochs the curves write each value beside its marker (a curve of one or two
#: points says little by its shape).
ANNOTATED_EPOCHS = 3


def plot_training_curves(history: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Loss, accuracy and GAP per epoch, train and validation, stage boundaries dashed.

    Accuracy and GAP are drawn on 0..1 and the loss from 0, whatever the values, so one epoch
    is a readable marker (with its value written beside it, up to :data:`ANNOTATED_EPOCHS`
    epochs) rather than a dot on an axis zoomed to 0.96..1.04; the epoch axis has whole epochs.

    Args:
        history: one row per epoch with ``epoch`` (1-based), ``stage`` and the columns
            ``train_loss, val_loss, train_accuracy, val_accuracy, train_gap, val_gap``.

    Returns:
        the figure (a plain ``matplotlib.figure.Figure``), saved to ``path`` when given.
    """
    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    epochs = history["epoch"].to_numpy() if len(history) else np.array([1])
    few = len(history) <= ANNOTATED_EPOCHS
    for ax, metric in zip(axes, ("loss", "accuracy", "gap")):
        top = 0.0
        for split, style in (("train", "-o"), ("val", "-s")):
            column = f"{split}_{metric}"
            if column in history and history[column].notna().any():
                ax.plot(history["epoch"], history[column], style, label=split, markersize=8 if few else 4)
                top = max(top, float(history[column].max()))
                if few:
                    for x, y in zip(history["epoch"], history[column]):
                        if pd.notna(y):
                            ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points",
                                        xytext=(8, -12 if split == "val" else 4), fontsize=8)
        ax.set_ylim(0, (top * 1.15 or 1.0) if metric == "loss" else 1.05)
        ax.set_xlim(epochs.min() - 0.5, epochs.max() + 0.5)
        ax.set_xticks(range(int(epochs.min()), int(epochs.max()) + 1, max(1, len(epochs) // 10)))
        starts = history.groupby("stage", sort=False)["epoch"].min().iloc[1:] if len(history) else []
        for stage, epoch in (starts.items() if len(history) else []):
            ax.axvline(epoch - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.text(epoch - 0.45, ax.get_ylim()[1], str(stage), va="top", fontsize=8, color="grey")
        ax.set_title(metric.upper() if metric == "gap" else metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def write_training_curves(run_dir: str | Path) -> Path:
    """Draw ``run_dir/curves.png`` from ``run_dir/metrics.csv`` (:func:`plot_training_curves`).

    The epoch hook ``landmark train`` gives :func:`landmark.train`; from Python, call it
    yourself during or after training (``landmark.train(..., on_epoch_end=write_training_curves)``).

    Returns:
        the path of the picture.
    """
    from ..runs import RunFolder
    run = RunFolder(run_dir)
    plot_training_curves(pd.read_csv(run.metrics_file), run.curves)
    return run.curves


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


def write_per_class_accuracy(folder: str | Path, names: dict[str, str] | None = None) -> Path:
    """Draw ``folder/per_class_accuracy.png`` from the ``folder/per_class_accuracy.csv`` that
    :func:`landmark.evaluation.evaluate` wrote (:func:`plot_per_class_accuracy`), its bars named
    by ``names`` or else by the CSV's ``name`` column.

    Returns:
        the path of the picture.
    """
    folder = Path(folder)
    table = pd.read_csv(folder / "per_class_accuracy.csv", dtype={"landmark_id": str, "name": str},
                        keep_default_na=False)
    if names is None and "name" in table:   # written by evaluate when it knew the names
        names = dict(zip(table["landmark_id"], table["name"]))
    plot_per_class_accuracy(table, folder / "per_class_accuracy.png", names)
    return folder / "per_class_accuracy.png"


def plot_class_frequency(class_counts: pd.DataFrame, path: str | Path | None, n: int = 20,
                         xlabel: str = "images") -> Figure:
    """Horizontal bars of the ``n`` most and ``n`` least frequent classes (two panels);
    with at most ``2 * n`` classes one panel shows every class once.  Used by ``landmark
    stats`` (``class_frequency.png``) and ``landmark report`` (``class_distribution.png``).

    Args:
        class_counts: ``landmark_id``, ``name``, ``images``, most frequent first
            (:func:`class_count_frame` makes it from a Series of counts).
        xlabel: what the counts are (``"training images"`` in the report).

    Returns:
        the figure (a plain ``matplotlib.figure.Figure``, outside pyplot), saved to ``path`` when given.
    """
    n = max(1, n)
    names = dict(zip(class_counts["landmark_id"].astype(str), class_counts["name"].fillna("").astype(str)))
    if len(class_counts) <= 2 * n:
        parts = [(class_counts, f"all {len(class_counts)} classes", "tab:blue")]
    else:
        parts = [(class_counts.head(n), f"{n} most frequent classes", "tab:blue"),
                 (class_counts.tail(n).iloc[::-1], f"{n} least frequent classes", "tab:orange")]
    height = max(3.0, 0.32 * max(len(p) for p, _, _ in parts) + 1.5)
    fig = Figure(figsize=(max(9, 7 * len(parts)), height))
    axes = fig.subplots(1, len(parts), squeeze=False)
    for ax, (part, title, color) in zip(axes[0], parts):
        y = np.arange(len(part))
        ax.barh(y, part["images"], color=color)
        ax.set_yticks(y, [label(k, names, 28) for k in part["landmark_id"]], fontsize=8)
        ax.invert_yaxis()
        for yi, value in zip(y, part["images"]):
            ax.text(value, yi, f" {value}", va="center", fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.set_xlim(0, part["images"].max() * 1.15)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Images per class ({len(class_counts):,} classes, {int(class_counts['images'].sum()):,} images, "
                 f"median {float(class_counts['images'].median()):g})")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def class_count_frame(counts: pd.Series, names: dict[str, str]) -> pd.DataFrame:
    """``landmark_id, name, images`` (:func:`plot_class_frequency`'s input) from images per class
    (a Series indexed by landmark_id, e.g. :func:`landmark.reporting.analysis.train_counts`)."""
    ids = [str(k) for k in counts.index]
    return pd.DataFrame({"landmark_id": ids, "name": [names.get(k, "") for k in ids], "images": counts.to_numpy()})


#: The accuracy-against-class-size scatter names its points up to this many classes.
LABEL_POINTS_MAX = 15
#: Fewer classes than this: no correlation to draw (the coefficients are NaN).
CORRELATION_MIN_CLASSES = 3
_OFFSETS = ((4, 4), (4, -11), (-4, 4), (-4, -11))  # points, alternated so neighbours do not collide


def plot_accuracy_vs_count(table: pd.DataFrame, stats: dict, names: dict[str, str],
                           path: str | Path | None) -> Figure | None:
    """Scatter of per-class accuracy against training images per class, with the Pearson and
    Spearman coefficients in the title (``table``/``stats`` from
    :func:`landmark.reporting.analysis.accuracy_vs_count`).

    Points are named only with at most :data:`LABEL_POINTS_MAX` classes; classes on the same
    spot share one label.  With fewer than :data:`CORRELATION_MIN_CLASSES` classes nothing is
    drawn.

    Returns:
        the figure (a plain ``matplotlib.figure.Figure``, outside pyplot), saved to ``path`` when given; ``None`` when nothing was drawn.
    """
    if len(table) < CORRELATION_MIN_CLASSES:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.scatter(table["train_images"], table["accuracy"], s=20 + 8 * table["queries"], alpha=0.7, color="#4575b4")
    if len(table) <= LABEL_POINTS_MAX:
        spots: dict[tuple[float, float], list[str]] = {}
        for row in table.itertuples():
            spots.setdefault((float(row.train_images), round(float(row.accuracy), 4)), []).append(
                label(row.landmark_id, names, 16))
        for k, ((x, y), labels) in enumerate(sorted(spots.items())):
            text = ", ".join(labels[:3]) + (f" +{len(labels) - 3}" if len(labels) > 3 else "")
            dx, dy = _OFFSETS[k % len(_OFFSETS)]
            ax.annotate(text, (x, y), fontsize=7, xytext=(dx, dy), textcoords="offset points",
                        ha="left" if dx > 0 else "right")
    ax.set_xlabel("training images of the class")
    ax.set_ylabel("accuracy on the evaluation set")
    ax.set_ylim(-0.05, 1.08)
    ax.set_title(f"Pearson r = {stats['pearson']:.2f} (p = {stats['pearson_p']:.2f}), "
                 f"Spearman ρ = {stats['spearman']:.2f} (p = {stats['spearman_p']:.2f}); marker size: queries",
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_accuracy_by_class(table: pd.DataFrame, stats: dict, names: dict[str, str], path: str | Path | None,
                           groups: dict[str, str] | None = None) -> Figure:
    """Per-class accuracy as one named bar per class, classes ordered by training photos (most
    at the top), for many classes (readable at 50 and more, where :func:`plot_accuracy_vs_count`
    names no point).  Each label reads ``name (photos)``; each bar ends with ``correct/queries``.

    Args:
        table: :func:`landmark.reporting.analysis.accuracy_vs_count` frame.
        stats: its coefficients (Pearson, Spearman), shown in the title.
        names: landmark_id -> name.
        groups: landmark_id -> group (e.g. the data folder); one colour per group, with a legend.

    Returns:
        the figure (a plain ``matplotlib.figure.Figure``, outside pyplot), saved to ``path`` when given.
    """
    rows = table.assign(landmark_id=table["landmark_id"].astype(str))
    rows = rows.sort_values(["train_images", "landmark_id"], ascending=[False, True], kind="mergesort")
    palette = ["#4575b4", "#f46d43", "#66bd63", "#984ea3", "#999999"]
    kinds = list(dict.fromkeys((groups or {}).get(k, "") for k in rows["landmark_id"]))
    colour = {g: palette[k % len(palette)] for k, g in enumerate(kinds)}
    fig = Figure(figsize=(8, 0.2 * len(rows) + 1.4))
    ax = fig.subplots()
    y = np.arange(len(rows))
    for g in kinds:
        mine = np.array([(groups or {}).get(k, "") == g for k in rows["landmark_id"]])
        ax.barh(y[mine], rows["accuracy"].to_numpy()[mine], color=colour[g], height=0.75, label=g or None)
    ax.set_yticks(y, [f"{label(k, names, 30)} ({n})" for k, n in zip(rows["landmark_id"], rows["train_images"])],
                  fontsize=7)
    ax.invert_yaxis()
    for yi, row in zip(y, rows.itertuples()):
        ax.text(row.accuracy, yi, f" {row.correct}/{row.queries}", va="center", fontsize=6)
    ax.set_xlim(0, 1.12)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("accuracy on the test photos (label: landmark (training photos); bar: correct/queries)")
    ax.set_title(f"{len(rows)} classes by training photos: Pearson r = {stats['pearson']:.2f} "
                 f"(p = {stats['pearson_p']:.2g}), Spearman ρ = {stats['spearman']:.2f} (p = {stats['spearman_p']:.2g})",
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    if groups:
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_confidence(queries: pd.DataFrame, path: str | Path) -> None:
    """Histogram of prediction confidence for correct, wrong, and non-landmark queries —
    what decides GAP, which ranks all predictions by confidence."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    scored = queries[queries["landmark_id"] != ""]
    groups = [("correct", scored[scored["correct"]], GREEN),
              ("wrong landmark", scored[~scored["correct"] & (scored["truth"] != "")], RED),
              ("non-landmark query", scored[scored["truth"] == ""], GREY)]
    bins = np.linspace(0, 1, 21)
    for name, part, colour in groups:
        if len(part):
            ax.hist(part["score"], bins=bins, alpha=0.55, color=colour, label=f"{name} ({len(part)})")
    ax.set_xlabel("confidence of the predicted landmark")
    ax.set_ylabel("queries")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
