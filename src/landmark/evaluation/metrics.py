"""Recognition metrics: Global Average Precision (GAP) and top-1 accuracy.

GAP (micro average precision) as defined by the Kaggle Google Landmark Recognition
challenges and GLDv2 (Weyand et al., CVPR 2020; reference code
``tensorflow/models/research/delf/.../google_landmarks_dataset/metrics.py``):
each query has at most one prediction ``(landmark_id, score)``; all predictions are
ranked by score, descending (ties: query id ascending, as Kaggle did), and

    GAP = 1/M * sum_i P(i) * rel(i)

where P(i) is the precision over the first i predictions, rel(i) is 1 when the i-th
prediction is correct, and M is the number of queries with at least one ground-truth
landmark.  Predictions for queries without a landmark stay in the ranking and can
only lower the score; a landmark query without a prediction counts in M only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def gap(predictions: pd.DataFrame, solution: dict[str, set[str]], ignore_non_landmarks: bool = False) -> float:
    """Global Average Precision.

    Args:
        predictions: one row per query with ``id`` (str), ``landmark_id`` (str) and
            ``score`` (float); rows with an empty landmark_id are no prediction.
            Ids missing from ``solution`` are ignored.
        solution: query id -> set of correct landmark ids (empty set: no landmark).
        ignore_non_landmarks: drop predictions for queries without a landmark
            (GLDv2's ``ignore_non_gt_test_images``; reported as ``gap_landmarks_only``).

    Returns:
        GAP in [0, 1]; 0.0 when no query has a landmark.

    Raises:
        ValueError: a query id appears more than once in ``predictions``.
    """
    positives = sum(1 for truth in solution.values() if truth)
    if positives == 0:
        return 0.0
    ranked = _ranked(predictions, solution, ignore_non_landmarks)
    correct = ranked["correct"].to_numpy()
    precision = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    return float((precision * correct).sum() / positives)


def accuracy(predictions: pd.DataFrame, solution: dict[str, set[str]]) -> float:
    """Top-1 accuracy over the queries that show a landmark (a missing prediction is wrong)."""
    truth = {k: v for k, v in solution.items() if v}
    if not truth:
        return 0.0
    predicted = dict(zip(predictions["id"].astype(str), predictions["landmark_id"].astype(str)))
    return sum(predicted.get(k, "") in v for k, v in truth.items()) / len(truth)


def recognition_scores(predictions: pd.DataFrame, solution: dict[str, set[str]]) -> dict[str, float]:
    """The scores every evaluation reports: ``gap``, ``gap_landmarks_only`` and ``accuracy``.

    Args, and the meaning of each score: :func:`gap` (``gap_landmarks_only`` is
    ``gap(..., ignore_non_landmarks=True)``) and :func:`accuracy`.
    """
    return {"gap": gap(predictions, solution),
            "gap_landmarks_only": gap(predictions, solution, ignore_non_landmarks=True),
            "accuracy": accuracy(predictions, solution)}


def per_class_accuracy(predictions: pd.DataFrame, solution: dict[str, set[str]]) -> pd.DataFrame:
    """Accuracy of each ground-truth landmark over its queries.

    A query with several ground-truth landmarks counts for each of them.

    Returns:
        frame ``landmark_id, queries, correct, accuracy`` sorted by accuracy, then id.
    """
    predicted = dict(zip(predictions["id"].astype(str), predictions["landmark_id"].astype(str)))
    rows = [(lid, predicted.get(qid, "") in truth) for qid, truth in solution.items() for lid in truth]
    frame = pd.DataFrame(rows, columns=["landmark_id", "correct"])
    out = frame.groupby("landmark_id")["correct"].agg(queries="size", correct="sum").reset_index()
    out["accuracy"] = out["correct"] / out["queries"]
    return out.sort_values(["accuracy", "landmark_id"], kind="mergesort").reset_index(drop=True)


def _ranked(predictions: pd.DataFrame, solution: dict[str, set[str]], ignore_non_landmarks: bool) -> pd.DataFrame:
    frame = predictions.assign(id=predictions["id"].astype(str),
                               landmark_id=predictions["landmark_id"].fillna("").astype(str))
    if frame["id"].duplicated().any():
        dup = frame.loc[frame["id"].duplicated(), "id"].iloc[0]
        raise ValueError(f"query {dup} has more than one prediction; GAP takes one per query")
    frame = frame[(frame["landmark_id"] != "") & frame["id"].isin(solution.keys())]
    if ignore_non_landmarks:
        frame = frame[np.array([bool(solution[i]) for i in frame["id"]], dtype=bool)]
    frame = frame.assign(correct=np.array([lid in solution[i] for i, lid in zip(frame["id"], frame["landmark_id"])],
                                          dtype=bool))
    return frame.sort_values(["score", "id"], ascending=[False, True], kind="mergesort")


def rejection_threshold(scores: np.ndarray, correct: np.ndarray) -> float:
    """The "no landmark" threshold that makes the most right decisions on validation queries.

    A query is answered when its confidence is at least the threshold, and "no landmark"
    otherwise.  A decision is right when a correct answer is given, or when a query whose
    answer would be wrong (a wrong landmark, or any answer to a photo of no landmark) gets
    "no landmark".  Ties between thresholds go to the midpoint of the widest gap, so the
    choice does not sit on one validation score.

    Args:
        scores: float ``[N]`` confidences of the validation answers.
        correct: bool ``[N]``: the answer is right (False for every non-landmark query).

    Returns:
        the threshold (float; 0.0 when every answer is right, above the largest score when
        none is).

    Raises:
        ValueError: lengths differ, no queries, or a non-finite score.
    """
    scores, correct = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=bool)
    if len(scores) != len(correct) or len(scores) == 0:
        raise ValueError(f"need as many scores as correctness flags (got {len(scores)} and {len(correct)}), at least one")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    order = np.argsort(-scores, kind="mergesort")
    s, c = scores[order], correct[order]
    # accepting the top i answers (i = 0..N): right = correct among them + wrong among the rest
    right = np.concatenate([[0], np.cumsum(c)]) + np.concatenate([[(~c).sum()], (~c).sum() - np.cumsum(~c)])
    best = np.flatnonzero(right == right.max())
    cut = int(best[np.argmax(_gaps(s, best))])
    if cut == len(s):
        return 0.0
    if cut == 0:
        return float(np.nextafter(s[0], np.inf))
    return float((s[cut - 1] + s[cut]) / 2)


def _gaps(sorted_desc: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Width of the score gap at each cut (accepting the first ``cut`` of ``sorted_desc``)."""
    padded = np.concatenate([[sorted_desc[0] + 1.0], sorted_desc, [0.0]])
    return padded[cuts] - padded[cuts + 1]
