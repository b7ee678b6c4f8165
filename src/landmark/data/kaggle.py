"""Kaggle / GLDv2 recognition file formats.

Submission: header ``id,landmarks``; each row ``ID,LANDMARK_ID SCORE`` (one prediction
per query; an empty ``landmarks`` field means no prediction).
Solution (``recognition_solution.csv``): ``id,landmarks,Usage``; landmarks are
space-separated ids, empty for queries that show no landmark.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pandas as pd

from ..io import read_csv


def write_submission(predictions: pd.DataFrame, path: str | Path) -> None:
    """Write ``id, landmark_id, score`` rows as a Kaggle recognition submission (atomically).

    Rows with an empty landmark_id are written with an empty ``landmarks`` field.

    Raises:
        ValueError: an id appears twice, or a prediction has a non-finite score (the file
            would be refused by :func:`read_submission` and by Kaggle).
    """
    path = Path(path)
    repeated = predictions["id"].astype(str).duplicated()
    if repeated.any():
        raise ValueError(f"id {predictions['id'][repeated].iloc[0]!r} would appear twice in {path}; "
                         f"a submission has one row per id")
    predicted = predictions["landmark_id"].astype(str) != ""
    if not pd.Series(predictions["score"], dtype=float)[predicted].map(math.isfinite).all():
        raise ValueError(f"a prediction for {path} has a non-finite score; the model gives NaN or inf")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "landmarks"])
        for image_id, lid, score in zip(predictions["id"], predictions["landmark_id"], predictions["score"]):
            writer.writerow([image_id, f"{lid} {score:.6f}" if lid != "" else ""])
    os.replace(tmp, path)


def read_submission(path: str | Path) -> pd.DataFrame:
    """Read a submission into ``id, landmark_id (str, '' = none), score (float)``.

    Only the first ``LANDMARK_ID SCORE`` pair of a row is used (GAP takes one).

    Raises:
        ValueError: missing columns, or a score that is not a finite number (names the row).
    """
    frame = read_csv(path, dtype=str, keep_default_na=False)
    if not {"id", "landmarks"} <= set(frame.columns):
        raise ValueError(f"{path}: a submission needs the columns id,landmarks (found {list(frame.columns)})")
    lids, scores = [], []
    for line, (image_id, field) in enumerate(zip(frame["id"], frame["landmarks"]), start=2):
        parts = field.split()
        if not parts:
            lids.append(""), scores.append(float("nan"))
            continue
        if len(parts) < 2:
            raise ValueError(f"{path}:{line}: '{field}' should be 'LANDMARK_ID SCORE'")
        try:
            score = float(parts[1])
        except ValueError:
            raise ValueError(f"{path}:{line}: score '{parts[1]}' of {image_id} is not a number") from None
        if not math.isfinite(score):
            raise ValueError(f"{path}:{line}: score '{parts[1]}' of {image_id} is not a finite number; "
                             f"GAP ranks by score, so every score must be finite")
        scores.append(score)
        lids.append(parts[0])
    return pd.DataFrame({"id": frame["id"], "landmark_id": lids, "score": scores})


def read_solution(path: str | Path, usage: str | None = None) -> dict[str, set[str]]:
    """Read ``recognition_solution.csv`` into {id: set of landmark ids}.

    Args:
        usage: keep only rows whose ``Usage`` is this (``Public``/``Private``); None = all.

    Raises:
        ValueError: missing ``id`` or ``landmarks`` column, or ``usage`` without a Usage column.
    """
    frame = read_csv(path, dtype=str, keep_default_na=False)
    if not {"id", "landmarks"} <= set(frame.columns):
        raise ValueError(f"{path}: a solution needs the columns id,landmarks[,Usage]")
    if usage:
        if "Usage" not in frame.columns:
            raise ValueError(f"{path} has no Usage column; drop --usage")
        frame = frame[frame["Usage"].str.lower() == usage.lower()]
    return {i: set(lm.split()) for i, lm in zip(frame["id"], frame["landmarks"])}
