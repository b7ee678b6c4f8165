"""Score a submission against a GLDv2 recognition solution, or against a labelled folder tree
(numbers only; the pictures are :mod:`landmark.reporting`'s).

A labelled folder tree (:func:`folder_solution`) is what a person has: one folder per landmark
(``tree/colosseum/*.jpg``, sub-folders allowed) and the photos without a landmark in a folder
named as in :data:`~landmark.data.names.NO_LANDMARK_FOLDERS` (``tree/no_landmark/``) or given apart
(``nonlandmarks``).  Its photos get the ids ``landmark predict --images tree`` gives them
(:func:`landmark.data.read_queries`), so a submission predicted from the tree is scored
against the tree.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..data.gldv2 import folder_landmark_id, read_queries, refuse_same_name, same_name_folders
from ..data.kaggle import read_retrieval_solution, read_retrieval_submission, read_solution, read_submission
from ..data.names import display_name, is_no_landmark_folder, pretty_name
from ..io import json_text, write_text_atomic
from .metrics import per_class_accuracy, recognition_scores
from .retrieval_metrics import mean_average_precision, precision_at_k, revisited_map_ranked

#: Predictions per query that GLDv2's retrieval metric reads (Kaggle Landmark Retrieval: mAP@100).
RETRIEVAL_MAX_PREDICTIONS = 100


def is_retrieval_solution(solution: str | Path) -> bool:
    """Whether ``solution`` is a retrieval solution (header with ``images``) rather than a
    recognition one (``landmarks``); reads the first line only."""
    with open(solution, "rb") as f:   # bytes: a file in another encoding is refused, naming it, by its reader
        header = f.readline().decode("utf-8", errors="replace").strip().split(",")
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
        write_text_atomic(Path(out) / "metrics.json", json_text(result, indent=2))
    return result

#: Prefix of the ids of the photos given apart as ``nonlandmarks`` (kept apart from the tree's ids).
NONLANDMARK_PREFIX = "nonlandmark-"


def folder_landmarks(folders: list[str], names: dict[str, str] | None = None) -> dict[str, str]:
    """The landmark id of each class folder of a labelled tree (``""``: a folder of
    :data:`~landmark.data.names.NO_LANDMARK_FOLDERS`): with ``names`` (a model's ``{landmark_id: name}``) a folder
    named as a landmark's id or as its readable name is that landmark; any other folder (and
    every one without ``names``) is the landmark :func:`folder_landmark_id` names."""
    by_name = {display_name(i, n).lower(): i for i, n in (names or {}).items()}
    found: dict[str, str] = {}
    for folder in dict.fromkeys(folders):
        lid = folder_landmark_id(folder)
        found[folder] = ("" if is_no_landmark_folder(folder) else lid if names is None or lid in names
                         else by_name.get(pretty_name(folder).lower(), by_name.get(folder.lower(), lid)))
    return found


def is_labelled_tree(folder: str | Path, names: dict[str, str]) -> bool:
    """Whether ``folder`` reads as a labelled folder tree for a model of ``names`` (``landmark
    report --images TREE``): a sub-folder names one of its landmarks (by id or readable name,
    :func:`folder_landmarks`), and the sub-folders are not only single hexadecimal characters
    (GLDv2's ``test/a/b/c/ID.jpg`` layout, unlabelled)."""
    folder = Path(folder)
    subs = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.is_dir() else []
    if not subs or all(len(s) == 1 and s in "0123456789abcdef" for s in subs):
        return False
    return any(lid in names for lid in folder_landmarks(subs, names).values())


def folder_solution(tree: str | Path, nonlandmarks: str | Path | None = None,
                    names: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict]:
    """The queries and ground truth of a labelled folder tree (module docstring).

    Args:
        tree: one folder per landmark (its first level), photos anywhere below it; a folder of
            :data:`~landmark.data.names.NO_LANDMARK_FOLDERS` holds photos of no landmark.
        nonlandmarks: a folder of photos without landmarks, given apart (ids prefixed
            :data:`NONLANDMARK_PREFIX`).
        names: ``{landmark_id: name}`` of a model: a class folder named as a landmark's id
            (``3``) or as its readable name (``angkor_wat``, ``Angkor Wat``) is that landmark;
            without it the folder's own name is the landmark id.

    Returns:
        (queries ``id, path, landmarks`` with ``landmarks`` '' for no landmark; a summary
        ``{"truth": {id: set}, "unlabelled": [paths of photos directly in tree], "folders": {folder: landmark_id}}``).

    Raises:
        FileNotFoundError: ``tree`` (or ``nonlandmarks``) is not a folder.
        ValueError: no photo in a class folder; an id of ``nonlandmarks`` repeats one of the tree;
            two class folders whose names differ only in case, ``_`` or spaces (``Petra``,
            ``petra``: two landmarks without ``names``, as ``landmark train`` refuses them).
    """
    tree = Path(tree)
    if not tree.is_dir():
        raise FileNotFoundError(f"{tree} is not a folder: give a folder with one sub-folder of photos per landmark")
    queries = read_queries(tree)
    top = [Path(p).relative_to(tree).parts for p in queries["path"]]
    class_folders = [parts[0] for parts in top if len(parts) > 1]
    clash = same_name_folders(dict.fromkeys(class_folders))   # as landmark train refuses them
    if clash:
        refuse_same_name(tree / clash[0], tree / clash[1])
    folders = folder_landmarks(class_folders, names)
    queries["landmarks"] = [folders[parts[0]] if len(parts) > 1 else None for parts in top]
    unlabelled = queries.loc[queries["landmarks"].isna(), "path"].tolist()
    queries = queries[queries["landmarks"].notna()].reset_index(drop=True)
    if nonlandmarks is not None:
        if not Path(nonlandmarks).is_dir():
            raise FileNotFoundError(f"--nonlandmarks {nonlandmarks} is not a folder of photos")
        extra = read_queries(nonlandmarks)
        extra["id"] = NONLANDMARK_PREFIX + extra["id"]
        extra["landmarks"] = ""
        if extra["id"].isin(queries["id"]).any():
            raise ValueError(f"photo ids of {nonlandmarks} repeat ids of {tree}: move those photos into "
                             f"{tree}/no_landmark instead")
        queries = pd.concat([queries, extra], ignore_index=True)
    if not (queries["landmarks"] != "").any():
        raise ValueError(f"{tree} has no photo in a landmark folder: put each landmark's photos in a folder "
                         f"named after it ({tree}/colosseum/...)")
    truth = {i: ({lm} if lm else set()) for i, lm in zip(queries["id"], queries["landmarks"])}
    return queries, {"truth": truth, "unlabelled": unlabelled, "folders": folders}


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


def _solution_names(solution: Path) -> dict[str, str]:
    """Names of a GLDv2 solution's landmarks: ``train_label_to_category.csv`` beside it or one
    folder up (``landmarks13/test/recognition_solution.csv``); {} when there is none."""
    from ..data.gldv2 import category_name
    for folder in (solution.parent, solution.parent.parent):
        if (folder / "train_label_to_category.csv").is_file():
            try:
                frame = pd.read_csv(folder / "train_label_to_category.csv", dtype=str, keep_default_na=False)
                return {k: category_name(v) for k, v in zip(frame["landmark_id"], frame["category"])}
            except (ValueError, KeyError, OSError):
                return {}
    return {}


def _is_score(text: str) -> bool:
    try:
        return "." in text and 0.0 <= float(text) <= 1.0
    except ValueError:
        return False


def evaluate(submission: str | Path, solution: str | Path, out: str | Path | None = None,
             usage: str | None = None, nonlandmarks: str | Path | None = None,
             names: dict[str, str] | None = None) -> dict:
    """Compute ``gap``, ``gap_landmarks_only`` and ``accuracy`` of a submission file.

    ``solution`` is ``recognition_solution.csv``, or a labelled folder tree
    (:func:`folder_solution`, with ``nonlandmarks`` and ``names``; the result then also says
    ``unlabelled``: photos directly in the tree, not scored, and ``folders``: each class
    folder's landmark id).

    With ``out``, also write ``metrics.json`` and ``per_class_accuracy.csv``
    (``landmark_id, [name,] queries, correct, accuracy``; ``name`` from ``names``, a folder
    tree's folder names, or a GLDv2 ``train_label_to_category.csv`` beside the solution) there.  Nothing is drawn: ``landmark
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
    extra = {}
    if Path(solution).is_dir():
        if usage:
            raise ValueError("--usage selects rows of a recognition_solution.csv; a folder has none: drop it")
        _, found = folder_solution(solution, nonlandmarks, names)
        truth = found["truth"]
        if len(predictions) and not predictions["id"].isin(truth.keys()).any():
            raise ValueError(f"no id of {submission} is a photo of {solution}: predict the folder itself "
                             f"(landmark predict RUN --images {solution}), or use landmark evaluate --model RUN --folder")
        extra = {"unlabelled": len(found["unlabelled"]), "folders": found["folders"]}
        names = {**{lid: pretty_name(f) for f, lid in found["folders"].items() if lid}, **(names or {})}
    else:
        _check_solution(Path(submission), Path(solution), predictions, read_solution(solution))
        truth = read_solution(solution, usage)
        names = names or _solution_names(Path(solution))
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
    result.update(extra)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        table = per_class_accuracy(predictions, truth)
        if names and "landmark_id" in table:   # the chart labels its bars with these
            table.insert(1, "name", [display_name(i, names.get(str(i))) for i in table["landmark_id"].astype(str)])
        table.to_csv(out / "per_class_accuracy.csv", index=False)
        write_text_atomic(out / "metrics.json", json_text(result, indent=2))
    return result
