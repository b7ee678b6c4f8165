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

import numpy as np
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
    spaced = predictions["landmark_id"].astype(str).str.contains(r"\s", regex=True)
    if spaced.any():
        raise ValueError(f"landmark id {predictions['landmark_id'][spaced].iloc[0]!r} holds a space, which the "
                         f"Kaggle format uses between id and score. An index's landmark enrolled so (by a "
                         f"labels CSV or an older `landmark index add --label`): build the index again without it "
                         f"and enrol its photos with `landmark index add INDEX --images PHOTOS --label NAME` (now "
                         f"the id is NAME with '_' for spaces, NAME kept for replies); a model's class: train again "
                         f"on class folders (their ids have '_' for spaces)")
    predicted = predictions["landmark_id"].astype(str) != ""
    if not pd.Series(predictions["score"], dtype=float)[predicted].map(math.isfinite).all():
        raise ValueError(f"a prediction for {path} has a non-finite score; the model gives NaN or inf")
    _write_rows(path, ["id", "landmarks"], ([image_id, f"{lid} {score:.6f}" if lid != "" else ""] for image_id, lid, score
                                           in zip(predictions["id"], predictions["landmark_id"], predictions["score"])))


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


def _refuse_repeats(path: str | Path, ids: pd.Series) -> None:
    """Refuse a solution that lists a query twice (the later row would silently replace the earlier).

    Raises:
        ValueError: names the id and both lines (1-based, the header is line 1).
    """
    repeated = ids.duplicated()
    if repeated.any():
        query = ids[repeated].iloc[0]
        first, again = (int(np.flatnonzero(ids.to_numpy() == query)[k]) + 2 for k in (0, 1))
        raise ValueError(f"{path}:{again}: query {query} is listed twice (also on line {first}); one row per query")


def read_solution(path: str | Path, usage: str | None = None) -> dict[str, set[str]]:
    """Read ``recognition_solution.csv`` into {id: set of landmark ids}.

    Args:
        usage: keep only rows whose ``Usage`` is this (``Public``/``Private``); None = all.

    Raises:
        ValueError: missing ``id`` or ``landmarks`` column, ``usage`` without a Usage column, or
            a query listed twice.
    """
    frame = _solution_rows(path, "landmarks", usage)
    return {i: set(lm.split()) for i, lm in zip(frame["id"], frame["landmarks"])}


# --- retrieval (Kaggle Landmark Retrieval 2019/2020, GLDv2) ---
# Submission: ``id,images``, ``images`` = up to 100 index image ids, space-separated, most
# similar first.  Solution (``retrieval_solution_v2.1.csv``): ``id,images,Usage``, ``images`` =
# the relevant index ids (``None`` / empty for queries that have none: Usage ``Ignored``).
# A solution may also carry the Revisited Oxford/Paris labels as columns ``easy``, ``hard``,
# ``junk`` (space-separated ids); then ``images`` is easy + hard.
RETRIEVAL_LABELS = ("easy", "hard", "junk")


def write_retrieval_submission(rankings: dict[str, list[str]], path: str | Path) -> None:
    """Write {query id: ranked index ids} as a Kaggle retrieval submission (atomically).

    Raises:
        ValueError: an index id holds a space or a comma (the field would not read back).
    """
    path = Path(path)
    for query, ids in rankings.items():
        if bad := next((i for i in [query, *ids] if not i or any(c in i for c in " ,\n")), None):
            raise ValueError(f"id {bad!r} (query {query}) is empty or holds a space or comma; give plain ids")
    _write_rows(path, ["id", "images"], ([query, " ".join(ids)] for query, ids in rankings.items()))


def read_retrieval_submission(path: str | Path) -> dict[str, list[str]]:
    """Read a retrieval submission into {query id: ranked index ids}.

    Raises:
        ValueError: no ``id,images`` columns, or a query listed twice (names the row).
    """
    frame = read_csv(path, dtype=str, keep_default_na=False)
    if not {"id", "images"} <= set(frame.columns):
        raise ValueError(f"{path}: a retrieval submission needs the columns id,images (found {list(frame.columns)})")
    out: dict[str, list[str]] = {}
    for line, (query, field) in enumerate(zip(frame["id"], frame["images"]), start=2):
        if query in out:
            raise ValueError(f"{path}:{line}: query {query} is listed twice; one row per query")
        out[query] = field.split()
    return out


def read_retrieval_solution(path: str | Path, usage: str | None = None) -> tuple[dict[str, list[str]], dict | None]:
    """Read a retrieval solution into {query id: relevant index ids} and, when the file has the
    columns ``easy``, ``hard``, ``junk``, {query id: {easy, hard, junk: ids}}.

    Queries with no relevant image (``None`` or empty, Kaggle's ``Ignored`` rows) are left out,
    as GLDv2's metric leaves them out.

    Args:
        usage: keep only rows whose ``Usage`` is this (``Public``/``Private``); None = all.

    Raises:
        ValueError: no ``id,images`` columns, ``usage`` without a Usage column, or a query
            listed twice.
    """
    frame = _solution_rows(path, "images", usage)
    relevant = {q: ids.split() for q, ids in zip(frame["id"], frame["images"]) if ids.strip() not in ("", "None")}
    if not set(RETRIEVAL_LABELS) <= set(frame.columns):
        return relevant, None
    labels = {q: {name: row[name].split() for name in RETRIEVAL_LABELS}
              for q, row in frame.set_index("id").iterrows() if q in relevant}
    return relevant, labels


def _solution_rows(path: str | Path, column: str, usage: str | None):
    """A solution CSV's rows (str), those of ``usage`` (Public/Private) only when given.

    Raises:
        ValueError: no ``id`` and ``column`` columns, or ``usage`` without a Usage column.
    """
    frame = read_csv(path, dtype=str, keep_default_na=False)
    if not {"id", column} <= set(frame.columns):
        kind = "a retrieval solution" if column == "images" else "a solution"
        raise ValueError(f"{path}: {kind} needs the columns id,{column}[,Usage]")
    _refuse_repeats(path, frame["id"])
    if usage:
        if "Usage" not in frame.columns:
            raise ValueError(f"{path} has no Usage column; drop --usage")
        frame = frame[frame["Usage"].str.lower() == usage.lower()]
    return frame


def _write_rows(path: Path, header: list[str], rows) -> None:
    """Write a CSV atomically: ``header`` then ``rows`` to a temp file in the same folder, fsync,
    then rename over ``path`` (a crash leaves the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
