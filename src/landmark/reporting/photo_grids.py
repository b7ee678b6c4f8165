"""Grids of example photos with their captions (PNG): the examples of a class and the
photos of the most confused pairs in ``landmark report``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data import ImageError, load_image
from .analysis import label
from .charts import GREEN, GREY, RED


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
