"""Class selection and per-class stratified train/val/test split, vectorised.

Works on the whole of GLDv2 (4.1M rows, 203k classes) in seconds: no Python loop
over classes or images.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


def select_classes(frame: pd.DataFrame, min_images_per_class: int = 1,
                   max_classes: int | None = None) -> tuple[pd.DataFrame, dict]:
    """Keep classes with at least ``min_images_per_class`` images, then the
    ``max_classes`` most frequent of those (ties broken by landmark_id order).

    The original work kept 6,401 of GLDv2's 203,094 classes this way.

    Returns:
        (the kept rows with unused categories removed, a summary dict with counts).
    """
    counts = frame["landmark_id"].value_counts(sort=False)
    kept = counts[counts >= min_images_per_class]
    if max_classes is not None and len(kept) > max_classes:
        order = np.lexsort((np.arange(len(kept)), -kept.to_numpy()))
        kept = kept.iloc[order[:max_classes]]
    out = frame[frame["landmark_id"].isin(kept.index)].copy()
    out["landmark_id"] = out["landmark_id"].cat.remove_unused_categories()
    summary = {
        "classes_in": int((counts > 0).sum()), "images_in": int(len(frame)),
        "classes_kept": int(len(kept)), "images_kept": int(len(out)),
        "min_images_per_class": min_images_per_class, "max_classes": max_classes,
    }
    return out.reset_index(drop=True), summary


@dataclass
class SplitSummary:
    """What the split did, including to classes too small to give every split an image."""

    train: int
    val: int
    test: int
    classes: int
    classes_train_only: int      # too small for val and test: all images train
    classes_without_val: int
    classes_without_test: int

    def as_dict(self) -> dict:
        return asdict(self)


def split_per_class(frame: pd.DataFrame, val_frac: float = 0.2, test_frac: float = 0.1,
                    seed: int = 0) -> tuple[np.ndarray, SplitSummary]:
    """Per-class stratified split into ``train`` / ``val`` / ``test``.

    Each class of n images gives ``round(n * test_frac)`` to test and
    ``round(n * val_frac)`` to val (halves round up), but always keeps at least one image
    in train: test gives way first, then val.  With 70/20/10, classes of 1 or 2 images
    are train-only, 3 images give 2/1/0, 5 give 3/1/1, and 10 give 7/2/1.  Images are drawn
    uniformly at random within each class with ``seed``.

    Args:
        frame: rows with a ``landmark_id`` column (any dtype).
        val_frac, test_frac: fractions in [0, 1) with a sum below 1.

    Returns:
        (array of str labels ``train|val|test``, shape ``[len(frame)]``, a summary).

    Raises:
        ValueError: fractions out of range.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"val_frac={val_frac}, test_frac={test_frac}: need each in [0,1) and a sum below 1")
    codes, _ = pd.factorize(frame["landmark_id"], sort=False)
    counts = np.bincount(codes)
    n_test = np.floor(counts * test_frac + 0.5).astype(np.int64)
    n_val = np.floor(counts * val_frac + 0.5).astype(np.int64)
    excess = np.maximum(n_test + n_val - (counts - 1), 0)
    cut = np.minimum(excess, n_test)
    n_test -= cut
    n_val -= np.minimum(excess - cut, n_val)

    key = np.random.default_rng(seed).random(len(codes))
    order = np.lexsort((key, codes))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - starts[codes[order]]
    labels = np.full(len(codes), "train", dtype=object)
    labels[rank < n_test[codes]] = "test"
    labels[(rank >= n_test[codes]) & (rank < (n_test + n_val)[codes])] = "val"
    summary = SplitSummary(
        train=int((labels == "train").sum()), val=int((labels == "val").sum()), test=int((labels == "test").sum()),
        classes=int(len(counts)),
        classes_train_only=int(((n_val == 0) & (n_test == 0) & ((val_frac > 0) | (test_frac > 0))).sum()),
        classes_without_val=int(((n_val == 0) & (val_frac > 0)).sum()),
        classes_without_test=int(((n_test == 0) & (test_frac > 0)).sum()),
    )
    return labels, summary
