"""Predict and score a labelled folder tree in one go: ``landmark evaluate --model RUN --folder TREE``.

The tree is read by :func:`landmark.evaluation.evaluate.folder_solution` (one folder per landmark,
named by its id or its readable name, ``no_landmark/`` for photos without one, or
``nonlandmarks`` apart); every photo is answered by the
:class:`~landmark.inference.recognizer.Recognizer` (the same answers as ``predict`` and
``recognize``) and the answers are scored as a Kaggle submission (GAP, accuracy).
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from ..data.kaggle import write_submission
from ..evaluation.evaluate import evaluate, folder_solution
from ..models.runtime_info import DEFAULT_RUNTIME

#: How many of the folders whose landmark the model does not know the warning names.
UNKNOWN_SHOWN = 3


class UnknownFolderWarning(UserWarning):
    """Class folders of a labelled tree name landmarks the model does not know (:func:`unknown_folders`)."""


def evaluate_folder(model: str | Path, folder: str | Path, *, nonlandmarks: str | Path | None = None,
                    out: str | Path | None = None, tta: int = 1, batch_size: int = 32, workers: int | None = None,
                    device: str | None = None, runtime: str = DEFAULT_RUNTIME) -> dict:
    """Answer every photo of a labelled folder tree with ``model`` and score the answers.

    Args:
        model: a run folder, ``.pt`` or ``.onnx`` (:meth:`Recognizer.load`; the run's index scores).
        folder: the labelled tree; ``nonlandmarks``: photos without landmarks, apart.
        out: folder for ``submission.csv`` (the answers), ``metrics.json`` and
            ``per_class_accuracy.csv``; None writes nothing.
        tta, batch_size, workers, device, runtime: as :func:`landmark.inference.predict.predict`.

    Returns:
        :func:`landmark.evaluation.evaluate` 's dict, plus ``unreadable`` (photos that could not be
        decoded, counted as missing predictions), ``folders`` (each class folder's landmark id) and
        ``verdicts`` (:func:`verdict_counts`: how many photos were named, "no landmark", unreadable;
        also in ``metrics.json``).

    Raises:
        FileNotFoundError: the model or a folder is missing.
        ValueError: no photo in a landmark folder (:func:`folder_solution`).
    """
    from .predict import recognize_queries
    from .recognizer import Recognizer
    folder_solution(folder, nonlandmarks)   # refuse a bad tree before the model loads
    rec = Recognizer.load(model, device=device, runtime=runtime)
    known = list(dict.fromkeys(rec.classes + (list(rec.index.labels) if rec.index is not None else [])))
    names = {str(i): rec.name(i) for i in known}
    queries, found = folder_solution(folder, nonlandmarks, names)
    unknown = unknown_folders(found["folders"], names)
    if unknown:
        shown = ", ".join(f"{f}/" for f in unknown[:UNKNOWN_SHOWN]) + (
            f" and {len(unknown) - UNKNOWN_SHOWN} more" if len(unknown) > UNKNOWN_SHOWN else "")
        one = len(unknown) == 1
        warnings.warn(f"{len(unknown)} class folder{'' if one else 's'} of {folder} name{'s' if one else ''} no "
                      f"landmark the model knows, so {'its' if one else 'their'} photos can never be answered right: "
                      f"{shown}; name each folder as a landmark of the model (its id or name), or enrol the "
                      f"landmark into an index (landmark index add)", UnknownFolderWarning, stacklevel=2)
    predictions, rejects = recognize_queries(rec, queries[["id", "path"]], tta=tta, batch_size=batch_size, workers=workers)
    with tempfile.TemporaryDirectory() as scratch:
        submission = Path(out) / "submission.csv" if out is not None else Path(scratch) / "submission.csv"
        submission.parent.mkdir(parents=True, exist_ok=True)
        write_submission(predictions, submission)
        result = evaluate(submission, folder, out=out, nonlandmarks=nonlandmarks, names=names)
    result["unreadable"] = len(rejects)
    result["verdicts"] = verdict_counts(rec, predictions)
    if out is not None:   # metrics.json says them too
        from ..io import json_text, write_text_atomic
        write_text_atomic(Path(out) / "metrics.json", json_text(result, indent=2))
    return result


def unknown_folders(folders: dict[str, str], names: dict[str, str]) -> list[str]:
    """The class folders of a labelled tree (``folders``: ``{folder: landmark_id}``, ``""`` for no
    landmark; :func:`~landmark.evaluation.evaluate.folder_solution`) whose landmark is none of the
    model's ``names`` (``{landmark_id: name}``: its classes and its index's landmarks): their photos
    can never be answered right."""
    return [f for f, lid in folders.items() if lid and str(lid) not in names]


def verdict_counts(rec, predictions) -> dict[str, int]:
    """How the photos were answered: ``{named, no_landmark, unreadable}``, from ``predictions``
    (:func:`~landmark.inference.predict.recognize_queries`' frame).  An unreadable photo is one
    without a score and a named one is one whose verdict is not ``no landmark``, not the verdict's
    words alone: they are a landmark's name, whatever it is ("unreadable" too); only for a landmark
    named "no landmark" itself is ``rec`` asked (:meth:`Recognizer.decide`, without local features)."""
    from ..retrieval.scoring import NO_LANDMARK
    readable = predictions["score"].notna().to_numpy()
    named = 0
    for lid, name, verdict, score, ok in zip(predictions["landmark_id"], predictions["name"], predictions["verdict"],
                                             predictions["score"], readable):
        if ok and verdict != NO_LANDMARK:
            named += 1
        elif ok and name == NO_LANDMARK:
            named += bool(rec.decide(str(lid), float(score))[0])
    return {"named": named, "no_landmark": int(readable.sum()) - named, "unreadable": int((~readable).sum())}
