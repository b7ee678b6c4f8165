"""Pictures and files of ``landmark stats``: class-frequency bars (drawn by
:func:`landmark.reporting.charts.plot_class_frequency`), log-log count distribution.

The bar chart follows Figure 1 of the original work (images of the most and the least
frequent landmarks side by side); the log-log plot is the class-size distribution of
GLDv2 (Weyand et al., CVPR 2020, Fig. 2 "number of images per landmark").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..data.dataset_stats import dataset_stats, stats_markdown
from .charts import plot_class_frequency
from ..defaults import STATS_TOP, STATS_WORKERS
from ..io import json_text


def plot_count_distribution(class_counts: pd.DataFrame, path: str | Path) -> None:
    """Log-log plots: classes per class size (left) and class size by rank (right)."""
    sizes = class_counts["images"].to_numpy()
    values, freq = np.unique(sizes, return_counts=True)
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    axes[0].loglog(values, freq, "o", markersize=4)
    axes[0].set_xlabel("images per class")
    axes[0].set_ylabel("number of classes")
    axes[0].set_title("Class-size distribution")
    ranked = np.sort(sizes)[::-1]
    axes[1].loglog(np.arange(1, len(ranked) + 1), ranked, "-", drawstyle="steps-post")
    axes[1].set_xlabel("class rank (most frequent first)")
    axes[1].set_ylabel("images")
    axes[1].set_title("Images per class by rank")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_stats_report(root: str | Path, out: str | Path, check_images: bool = True,
                       near_duplicates: bool = False, workers: int = STATS_WORKERS, top: int = STATS_TOP,
                       progress: bool = True) -> dict:
    """Compute :func:`landmark.data.dataset_stats.dataset_stats` of ``root`` and write into ``out``.

    Files: ``stats.json``, ``stats.md``, ``class_counts.csv``, ``duplicates.csv``,
    ``unreadable.csv``, ``class_frequency.png`` (``top`` most / least frequent classes)
    and ``count_distribution.png`` (log-log).  ``out`` is created (the caller decides
    about existing folders).

    Returns:
        the summary dict written to ``stats.json`` (with a ``files`` entry).
    """
    out = Path(out)
    summary, tables = dataset_stats(root, check_images, near_duplicates, workers, progress=progress)
    out.mkdir(parents=True, exist_ok=True)   # after: data refused (a missing folder ...) leaves no empty --out
    figures = [out / "class_frequency.png", out / "count_distribution.png"]
    plot_class_frequency(tables["class_counts"], figures[0], top)
    plot_count_distribution(tables["class_counts"], figures[1])
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    summary["files"] = {name: str(out / f"{name}.csv") for name in tables} | {f.stem: str(f) for f in figures}
    (out / "stats.json").write_text(json_text(summary, indent=2) + "\n", encoding="utf-8")
    (out / "stats.md").write_text(stats_markdown(summary, tables["class_counts"], [str(f) for f in figures]))
    return summary
