"""Report figures beyond :mod:`landmark.reporting.plots`: class sizes, accuracy against
class size, and grids of example photos with their predictions (all PNG)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data import ImageError, load_image
from .analysis import label

GREEN, RED, GREY = "#1a9850", "#d73027", "#555555"


def plot_class_distribution(counts: pd.Series, names: dict[str, str], path: str | Path, show: int = 20) -> None:
    """Bar charts of training images per class: the ``show`` most and least frequent.

    With at most ``2 * show`` classes every class appears once, largest first.

    Args:
        counts: :func:`landmark.reporting.analysis.train_counts` Series (largest first).
    """
    parts = [("all classes", counts)] if len(counts) <= 2 * show else \
        [(f"{show} most frequent", counts.head(show)), (f"{show} least frequent", counts.tail(show))]
    fig = Figure(figsize=(7 * len(parts), 0.3 * max(len(p) for _, p in parts) + 1.6))
    axes = fig.subplots(1, len(parts), squeeze=False)
    for ax, (title, part) in zip(axes[0], parts):
        ax.barh([label(k, names, 28) for k in part.index][::-1], part.to_numpy()[::-1], color="#4575b4")
        ax.set_xlabel("training images")
        ax.set_title(f"{title} ({len(counts)} classes, {int(counts.sum())} images, "
                     f"median {float(counts.median()):.0f})", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


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


@dataclass
class Tile:
    """One photo of a grid: its file, the caption under it and the caption's colour."""

    path: str
    caption: str
    colour: str = GREY


def thumbnail(path: str, width: int = 240) -> tuple[np.ndarray, str | None]:
    """uint8 ``[h, w, 3]`` thumbnail at most ``width`` pixels wide, or a grey square and the
    reason when the file cannot be decoded (never raises for a bad image)."""
    try:
        img = load_image(path, draft=width)
    except ImageError as err:
        return np.full((width, width, 3), 200, np.uint8), str(err)
    img.thumbnail((width, width * 2))
    return np.asarray(img), None


def plot_tile_rows(rows: list[tuple[str, list[Tile]]], path: str | Path, title: str = "", columns: int = 5) -> int:
    """A grid with one labelled row per entry of ``rows`` (row label, tiles); a row holds at
    most ``columns`` tiles.  Rows without tiles are left out (their labels are listed under
    the title); with no tile at all, one line of text says so.  Unreadable photos are drawn
    as grey squares captioned with the reason.

    Returns:
        the number of tiles whose photo could not be read.
    """
    bad = 0
    empty = [row_label for row_label, tiles in rows if not tiles]
    rows = [(row_label, tiles) for row_label, tiles in rows if tiles]
    if empty:
        title = "\n".join(t for t in (title, "none: " + "; ".join(empty)) if t)
    if not rows:
        fig = Figure(figsize=(2.8 * columns, 1.2))
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, title, fontsize=10, ha="center", va="center", transform=ax.transAxes)
        fig.savefig(path, dpi=80)
        return 0
    fig = Figure(figsize=(2.8 * columns, 3.0 * len(rows) + 0.5))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for ax_row, (row_label, tiles) in zip(axes, rows):
        for ax in ax_row:
            ax.axis("off")
        for k, (ax, tile) in enumerate(zip(ax_row, tiles[:columns])):
            img, reason = thumbnail(tile.path)
            bad += reason is not None
            ax.imshow(img)
            ax.set_title(tile.caption if reason is None else f"unreadable: {reason}"[:40], fontsize=8,
                         color=tile.colour)
            if k == 0:
                ax.text(-0.08, 0.5, row_label, fontsize=9, rotation=90, va="center", ha="right",
                        transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return bad


def plot_class_examples(queries: pd.DataFrame, lid: str, names: dict[str, str], path: str | Path,
                        columns: int = 5) -> int:
    """Correct and misclassified queries of landmark ``lid`` with predicted label and confidence.

    Args:
        queries: :func:`landmark.reporting.analysis.query_table` frame.

    Returns:
        the number of unreadable photos (see :func:`plot_tile_rows`).
    """
    mine = queries[queries["truth"].str.split().apply(lambda t: lid in t)]
    mine = mine.sort_values("score", ascending=False, kind="mergesort")
    good = [Tile(r.path, f"{label(r.landmark_id, names, 16)} {r.score:.0%}", GREEN)
            for r in mine[mine["correct"]].itertuples()]
    wrong = [Tile(r.path, f"→ {label(r.landmark_id, names, 16)} {r.score:.0%}" if r.landmark_id else "rejected", RED)
             for r in mine[~mine["correct"]].itertuples()]
    acc = len(good) / max(1, len(mine))
    return plot_tile_rows([(f"correct ({len(good)})", good), (f"misclassified ({len(wrong)})", wrong)], path,
                          f"{label(lid, names, 40)}: accuracy {acc:.0%} over {len(mine)} queries", columns)


def plot_confusion_examples(pairs: pd.DataFrame, queries: pd.DataFrame, references: dict[str, str],
                            names: dict[str, str], path: str | Path, columns: int = 5) -> int:
    """For each confused pair: a training photo of each class, then the queries of one class
    predicted as the other (captions: true → predicted, confidence).

    Args:
        pairs: :func:`landmark.reporting.analysis.confusion_pairs` frame.
        references: landmark_id -> path of one training photo.

    Returns:
        the number of unreadable photos.
    """
    rows = []
    for p in pairs.itertuples():
        tiles = [Tile(references[c], f"train: {label(c, names, 18)}", GREY) for c in (p.class_a, p.class_b)
                 if c in references]
        wrong = queries[~queries["correct"] & queries["landmark_id"].isin([p.class_a, p.class_b])]
        for r in wrong.sort_values("score", ascending=False, kind="mergesort").itertuples():
            truth = r.truth.split()
            if (p.class_a in truth and r.landmark_id == p.class_b) or (p.class_b in truth and r.landmark_id == p.class_a):
                tiles.append(Tile(r.path, f"{r.truth} → {r.landmark_id} ({r.score:.0%})", RED))
        rows.append((f"{label(p.class_a, names, 14)} ↔ {label(p.class_b, names, 14)}: {p.total}", tiles))
    if not rows:
        rows = [("no confusions", [])]
    return plot_tile_rows(rows, path, "Most confused pairs (first two photos: training examples)", columns)


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
