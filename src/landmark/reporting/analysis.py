"""The numbers behind the report's pictures: class sizes, per-class accuracy against
class size, the classes worth looking at, and the most confused pairs of classes.

Per-class accuracy itself is :func:`landmark.evaluation.per_class_accuracy`; this
module only combines it with the training split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.names import display_name
from ..data import read_categories
from ..data.gldv2 import category_name


def class_names(data_root: str | Path | list | None) -> dict[str, str]:
    """{landmark_id: readable name} from ``train_label_to_category.csv`` of a GLDv2 folder (of each, for a list).

    The category is a Wikimedia Commons URL (``.../Category:Taj_Mahal``); the name is its
    last part with underscores as spaces.  Empty when the folder or file is absent.
    """
    if data_root is None:
        return {}
    return {lid: category_name(cat) for lid, cat in read_categories(data_root).items()}


def label(lid: str, names: dict[str, str], width: int = 22) -> str:
    """A class as charts show it: ``"12 Taj Mahal"`` for a numeric (GLDv2) id with a name,
    ``"Hue Imperial City"`` for a class folder (:func:`landmark.data.names.display_name`), the
    name cut to ``width`` characters; the bare id when it has no other name."""
    lid = str(lid)
    name = display_name(lid, names.get(lid))
    if len(name) > width:
        name = name[: width - 1] + "…"
    if name == lid:
        return lid
    return f"{lid} {name}" if lid.isdigit() else name


def train_counts(split: pd.DataFrame) -> pd.Series:
    """Training images per landmark from a run's ``split.csv`` frame (``id,landmark_id,split``).

    Returns:
        int Series indexed by landmark_id (str), largest first (ties by id).
    """
    train = split.loc[split["split"] == "train", "landmark_id"].astype(str)
    counts = train.value_counts()
    order = sorted(counts.index, key=lambda k: (-counts[k], k))
    return counts.reindex(order).rename("train_images")


def accuracy_vs_count(per_class: pd.DataFrame, counts: pd.Series) -> tuple[pd.DataFrame, dict]:
    """Join per-class accuracy with training images per class and correlate them.

    Args:
        per_class: :func:`landmark.evaluation.per_class_accuracy` frame.
        counts: :func:`train_counts` Series.

    Returns:
        (frame ``landmark_id, queries, correct, accuracy, train_images``; dict with
        ``pearson``, ``pearson_p``, ``spearman``, ``spearman_p`` and ``classes``).
        Coefficients are NaN with fewer than 3 classes or a constant column (Pearson 1895;
        Spearman 1904, via :mod:`scipy.stats`).
    """
    from scipy import stats
    table = per_class.assign(landmark_id=per_class["landmark_id"].astype(str))
    table["train_images"] = table["landmark_id"].map(counts).fillna(0).astype(int)
    out = {"classes": int(len(table)), "pearson": float("nan"), "pearson_p": float("nan"),
           "spearman": float("nan"), "spearman_p": float("nan")}
    x, y = table["train_images"].to_numpy(float), table["accuracy"].to_numpy(float)
    if len(table) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        p = stats.pearsonr(x, y)
        s = stats.spearmanr(x, y)
        out.update(pearson=float(p.statistic), pearson_p=float(p.pvalue),
                   spearman=float(s.statistic), spearman_p=float(s.pvalue))
    return table, out


#: Training photos per class: the bins of :func:`accuracy_by_count_bin` (lower edges).
COUNT_BINS = (1, 10, 30, 60)


def accuracy_by_count_bin(table: pd.DataFrame, edges: tuple[int, ...] = COUNT_BINS) -> pd.DataFrame:
    """Accuracy of the classes grouped by training photos per class (a long tail's view).

    Args:
        table: :func:`accuracy_vs_count` frame (``landmark_id, queries, correct, accuracy,
            train_images``).
        edges: ascending lower edges; bin ``k`` holds ``edges[k] <= train_images < edges[k+1]``
            (the last is open-ended; classes below ``edges[0]`` are left out).

    Returns:
        frame ``train_images`` (``"10-29"``, ``">=60"``), ``classes``, ``queries``, ``correct``,
        ``accuracy`` (correct / queries: each query counts once), ``class_mean`` (the mean of the
        classes' accuracies), one row per non-empty bin, fewest photos first.
    """
    rows = []
    for k, low in enumerate(edges):
        high = edges[k + 1] if k + 1 < len(edges) else None
        inside = (table["train_images"] >= low) & (True if high is None else table["train_images"] < high)
        part = table[inside]
        if part.empty:
            continue
        rows.append({"train_images": f">={low}" if high is None else f"{low}-{high - 1}", "classes": int(len(part)),
                     "queries": int(part["queries"].sum()), "correct": int(part["correct"].sum()),
                     "accuracy": float(part["correct"].sum() / part["queries"].sum()),
                     "class_mean": float(part["accuracy"].mean())})
    return pd.DataFrame(rows, columns=["train_images", "classes", "queries", "correct", "accuracy", "class_mean"])


def pick_classes(per_class: pd.DataFrame, worst: int = 3, middle: int = 3) -> tuple[list[str], list[str]]:
    """The classes to show examples of.

    Returns:
        (the ``worst`` lowest-accuracy classes, lowest first; the ``middle`` classes whose
        accuracy is closest to 0.5 among the rest, closest first; classes at 0 or 100 % are never
        "near 50 %", so there may be fewer).  Ties go to the class with
        more queries, then the smaller id.
    """
    table = per_class.assign(landmark_id=per_class["landmark_id"].astype(str))
    table = table.sort_values(["accuracy", "queries", "landmark_id"], ascending=[True, False, True], kind="mergesort")
    low = table["landmark_id"].head(worst).tolist()
    rest = table[~table["landmark_id"].isin(low) & (table["accuracy"] > 0) & (table["accuracy"] < 1)]
    rest = rest.assign(dist=(rest["accuracy"] - 0.5).abs())
    mid = rest.sort_values(["dist", "queries", "landmark_id"], ascending=[True, False, True], kind="mergesort")
    return low, mid["landmark_id"].head(middle).tolist()


def confusion_pairs(predictions: pd.DataFrame, solution: dict[str, set[str]], top: int = 5) -> pd.DataFrame:
    """The pairs of landmarks most often mistaken for each other.

    A landmark query (non-empty truth) whose prediction is not among its landmarks counts
    once for each (true, predicted) pair; queries without a prediction and non-landmark
    queries do not count.  Pairs are unordered: A taken for B and B taken for A add up.

    Args:
        predictions: ``id, landmark_id`` (str) frame, one row per query.
        solution: query id -> set of true landmark ids.

    Returns:
        frame ``class_a, class_b, a_as_b, b_as_a, total`` (``class_a`` < ``class_b`` as
        strings), at most ``top`` rows, most confused first (ties by class ids).
    """
    predicted = dict(zip(predictions["id"].astype(str), predictions["landmark_id"].fillna("").astype(str)))
    counts: dict[tuple[str, str], int] = {}
    for qid, truth in solution.items():
        guess = predicted.get(qid, "")
        if not truth or not guess or guess in truth:
            continue
        for t in truth:
            counts[(t, guess)] = counts.get((t, guess), 0) + 1
    rows = []
    for a, b in sorted({tuple(sorted(k)) for k in counts}):
        ab, ba = counts.get((a, b), 0), counts.get((b, a), 0)
        rows.append((a, b, ab, ba, ab + ba))
    frame = pd.DataFrame(rows, columns=["class_a", "class_b", "a_as_b", "b_as_a", "total"])
    frame = frame.sort_values(["total", "class_a", "class_b"], ascending=[False, True, True], kind="mergesort")
    return frame.head(top).reset_index(drop=True)


def query_table(queries: pd.DataFrame, predictions: pd.DataFrame, solution: dict[str, set[str]]) -> pd.DataFrame:
    """One row per query: ``id, path, truth`` (space-separated, empty for non-landmarks),
    ``landmark_id`` (predicted, empty when rejected), ``score`` and ``correct`` (bool)."""
    table = queries[["id", "path"]].assign(id=queries["id"].astype(str)).merge(
        predictions[["id", "landmark_id", "score"]].assign(id=predictions["id"].astype(str)), on="id", how="left")
    table["landmark_id"] = table["landmark_id"].fillna("").astype(str)
    truth = [solution.get(i, set()) for i in table["id"]]
    table["truth"] = [" ".join(sorted(t)) for t in truth]
    table["correct"] = [bool(t) and p in t for p, t in zip(table["landmark_id"], truth)]
    return table
