"""Score a submission against a GLDv2 recognition solution (numbers only; the pictures are
:mod:`landmark.reporting`'s)."""
from __future__ import annotations

import json
from pathlib import Path

from ..data.kaggle import read_retrieval_solution, read_retrieval_submission, read_solution, read_submission
from ..io import write_text_atomic
from .metrics import per_class_accuracy, recognition_scores
from .retrieval_metrics import mean_average_precision, precision_at_k, revisited_map_ranked

#: Predictions per query that GLDv2's retrieval metric reads (Kaggle Landmark Retrieval: mAP@100).
RETRIEVAL_MAX_PREDICTIONS = 100


def is_retrieval_solution(solution: str | Path) -> bool:
    """Whether ``solution`` is a retrieval solution (header with ``images``) rather than a
    recognition one (``landmarks``); reads the first line only."""
    with open(solution, newline="") as f:
        header = f.readline().strip().split(",")
    return "images" in header and "landmarks" not in header


def evaluate_retrieval(submission: str | Path, solution: str | Path, out: str | Path | None = None,
                       usage: str | None = None) -> dict:
    """Score a retrieval submission (``id,images``) against a retrieval solution (``id,images,Usage``).

    ``map@100``: GLDv2 / Kaggle Landmark Retrieval mAP@100
    (:func:`~landmark.evaluation.retrieval_metrics.mean_average_precision`); ``precision@10``;
    and, when the solution has ``easy,hard,junk`` columns, the Revisited Oxford/Paris mAP of the
    Easy, Medium and Hard setups (``revisited``, :func:`~landmark.evaluation.retrieval_metrics.revisited_map`).
    With ``out``, also ``metrics.json`` there.

    Returns:
        dict with map@100, precision@10, queries (solution queries with a relevant image),
        ranked (of those, queries the submission ranks), unknown_ids (submitted queries not in
        the solution, ignored) and optionally revisited and usage.

    Raises:
        ValueError: a malformed file, or no submitted query in the solution.
    """
    ranked = read_retrieval_submission(submission)
    relevant, labels = read_retrieval_solution(solution, usage)
    every, _ = read_retrieval_solution(solution)
    if ranked and not set(ranked) & set(every) and every:
        raise ValueError(f"no query of {submission} is in {solution} ({len(every)} queries); is it the solution "
                         f"of these queries?")
    mine = {q: ids for q, ids in ranked.items() if q in relevant}
    result = {"map@100": mean_average_precision(mine, relevant, RETRIEVAL_MAX_PREDICTIONS),
              "precision@10": precision_at_k(mine, relevant, 10),
              "queries": len(relevant), "ranked": len(mine),
              "unknown_ids": sum(1 for q in ranked if q not in every)}
    if labels is not None:
        result["revisited"] = revisited_map_ranked({q: ids[:RETRIEVAL_MAX_PREDICTIONS] for q, ids in mine.items()},
                                                   labels)
    if usage:
        result["usage"] = usage
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(out) / "metrics.json", json.dumps(result, indent=2))
    return result


def _check_solution(submission: Path, solution: Path, predictions, truth: dict) -> None:
    """Refuse a solution that cannot be the ground truth of this submission.

    Raises:
        ValueError: the same file as the submission; every landmarks field reads as
            ``ID SCORE`` (a submission given as the solution); or no submitted id is in it.
    """
    if submission.resolve() == solution.resolve():
        raise ValueError(f"--solution {solution} is the submission itself; give recognition_solution.csv")
    fields = [sorted(v) for v in truth.values() if v]
    if fields and all(len(v) == 2 and any(_is_score(x) for x in v) for v in fields):
        raise ValueError(f"{solution} looks like a submission (every landmarks field is 'LANDMARK_ID SCORE'); "
                         f"give the ground truth (recognition_solution.csv: id,landmarks,Usage)")
    if len(predictions) and not predictions["id"].isin(truth.keys()).any():
        raise ValueError(f"no id of {submission} is in {solution} ({len(truth)} ids); is it the solution "
                         f"of these images?")


def _is_score(text: str) -> bool:
    try:
        return "." in text and 0.0 <= float(text) <= 1.0
    except ValueError:
        return False


def evaluate(submission: str | Path, solution: str | Path, out: str | Path | None = None,
             usage: str | None = None) -> dict:
    """Compute ``gap``, ``gap_landmarks_only`` and ``accuracy`` of a submission file.

    With ``out``, also write ``metrics.json`` and ``per_class_accuracy.csv``
    (``landmark_id, queries, correct, accuracy``) there.  Nothing is drawn: ``landmark
    evaluate --out`` adds ``per_class_accuracy.png`` with
    :func:`landmark.reporting.charts.write_per_class_accuracy`.

    Returns:
        dict with gap, gap_landmarks_only, accuracy, queries, landmark_queries,
        predictions, missing_predictions, unknown_ids (ids in the submission but not in
        the solution, ignored).

    Raises:
        ValueError: a malformed submission or solution (non-finite scores, repeated ids),
            or a solution that cannot belong to this submission (:func:`_check_solution`).
    """
    predictions = read_submission(submission)
    _check_solution(Path(submission), Path(solution), predictions, read_solution(solution))
    truth = read_solution(solution, usage)
    in_solution = predictions["id"].isin(truth.keys())
    known = predictions["id"].isin(read_solution(solution).keys()) if usage else in_solution
    result = {
        **recognition_scores(predictions, truth),
        "queries": len(truth),
        "landmark_queries": sum(1 for v in truth.values() if v),
        "predictions": int(((predictions["landmark_id"] != "") & in_solution).sum()),
        "missing_predictions": int(len(set(truth) - set(predictions.loc[predictions["landmark_id"] != "", "id"]))),
        "unknown_ids": int((~known).sum()),
    }
    if usage:
        result["usage"] = usage
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        per_class_accuracy(predictions, truth).to_csv(out / "per_class_accuracy.csv", index=False)
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result
