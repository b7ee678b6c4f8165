"""A run's reference index and its "no landmark" thresholds, made at the end of training.

``build_reference(run_dir)`` embeds the run's training photos with its best checkpoint into
``run_dir/index`` (a :class:`~landmark.retrieval.index.LandmarkIndex`), then answers the
validation photos and chooses, with
:func:`~landmark.evaluation.metrics.rejection_threshold`, the confidence below which an
answer becomes "no landmark":

* ``classifier``: on the softmax probability alone (used without an index);
* ``reference``: on ``prob * s_ref^3`` (:func:`~landmark.retrieval.scoring.reference_score`,
  used when the index is loaded).

The validation answers alone cannot choose it (they are all of known landmarks), so photos that
should get "no landmark" join them as queries whose every answer is wrong (:func:`choose_thresholds`):

* with non-landmark photos (``nonlandmarks``: a folder or CSV, ``train --nonlandmarks``; else the photos
  of the training tree's ``no_landmark/`` folder, which is never a class): those;
* without (the default): **leave-class-out** -- each validation photo is answered once more as
  if its own landmark were unknown, with its class removed from the softmax (renormalised over
  the others, :func:`~landmark.retrieval.scoring.leave_class_out`) and its landmark's photos
  removed from the reference index: its best remaining score is what a photo of a landmark the
  model never learnt scores.  docs/quality.md compares both on the open-set protocol.

Both thresholds are stored in the best checkpoint (``reject_threshold``), where
:class:`~landmark.inference.Recognizer` finds them, and how they were chosen in
``threshold_method`` (also in ``reference.json``; :func:`threshold_line` says it in one line).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import read_queries, read_train, with_paths
from ..evaluation.metrics import rejection_threshold
from ..io import NpyRows, commit, embedding_files, sidecar, temp_path
from ..models import load_model
from ..models.factory import load_checkpoint_file, write_checkpoint
from ..runs import RunFolder
from .config import REJECT_THRESHOLD, IndexParams
from .embeddings import Embeddings, embed_images, load_embeddings
from .index import LandmarkIndex
from .scoring import REFERENCE_K, counts_of, leave_class_out, reference_score

#: classifier candidates kept per validation photo (leave-class-out needs the runner-up)
VALIDATION_TOP = 5


def split_frames(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The run's labelled photos per split (``id, landmark_id, path``), from ``split.csv``."""
    run = RunFolder(run_dir)
    data = run.data()
    clean = run.config().data.clean
    split = run.split()
    frame = with_paths(read_train(data, clean=clean), data)
    frame = frame.assign(landmark_id=frame["landmark_id"].astype(str)).merge(split[["id", "split"]], on="id")
    return {s: frame[frame["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}


def answer_with_reference(index: LandmarkIndex, vectors: np.ndarray, labels: np.ndarray,
                          probs: np.ndarray) -> np.ndarray:
    """``prob * s_ref^3`` of each classifier answer against ``index`` (vectors ``[Q, D]`` L2-normalised;
    :func:`~landmark.retrieval.scoring.reference_score`, as the recogniser scores)."""
    sims, rows = index.search(np.ascontiguousarray(vectors, dtype=np.float32), REFERENCE_K)
    neighbours = np.where(rows >= 0, index.labels[np.clip(rows, 0, None)], "")
    return reference_score(labels, probs, sims, neighbours, counts=counts_of(index.labels))


def answer_without_own_landmark(index: LandmarkIndex, vectors: np.ndarray, truth: np.ndarray,
                                class_labels: np.ndarray, class_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-class-out answers of labelled photos (module docstring): the classifier score and the
    reference score of each photo's best landmark other than its own, with its own landmark's
    photos taken out of the index (the first :data:`REFERENCE_K` other neighbours among the
    ``4 * REFERENCE_K`` nearest; a landmark with more photos than that leaves fewer).

    Args:
        vectors: float ``[Q, D]`` L2-normalised; truth: str ``[Q]``; class_labels / class_probs:
            the classifier's top-t ``[Q, t]`` (t >= 2).

    Returns:
        (float64 ``[Q]`` classifier scores, float64 ``[Q]`` reference scores).
    """
    other, probs = leave_class_out(truth, class_labels, class_probs)
    sims, rows = index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(len(index), 4 * REFERENCE_K))
    labels = np.where(rows >= 0, index.labels[np.clip(rows, 0, None)], "")
    mine = labels == np.asarray(truth, dtype=str)[:, None]
    order = np.argsort(mine, axis=1, kind="stable")[:, :REFERENCE_K]   # the others first, in similarity order
    sims = np.where(np.take_along_axis(mine, order, 1), -np.inf, np.take_along_axis(sims, order, 1))
    labels = np.where(np.take_along_axis(mine, order, 1), "", np.take_along_axis(labels, order, 1))
    counts = counts_of(index.labels)
    return probs, reference_score(other, probs, sims, labels, counts=counts)


def choose_thresholds(index: LandmarkIndex, truth: np.ndarray, class_labels: np.ndarray, class_probs: np.ndarray,
                      vectors: np.ndarray, simulate_unknown: bool) -> tuple[dict, dict]:
    """Choose the ``classifier`` and ``reference`` thresholds (module docstring) with
    :func:`~landmark.evaluation.metrics.rejection_threshold` (the most right decisions).

    Args:
        truth: str ``[Q]`` each query's landmark, ``""`` for a photo of no landmark.
        class_labels, class_probs: the classifier's top-t ``[Q, t]``, best first.
        vectors: float ``[Q, D]`` the queries' L2-normalised embeddings.
        simulate_unknown: add the leave-class-out answers of the labelled queries (skipped for a
            model of one class: no other landmark to answer).

    Returns:
        (``{"classifier": t, "reference": t}``, the record of how: ``method``, counts, both
        thresholds and the fraction of right decisions each makes on the queries used).
    """
    truth = np.asarray(truth, dtype=str)
    labels, probs = np.asarray(class_labels)[:, 0].astype(str), np.asarray(class_probs, dtype=np.float64)[:, 0]
    correct = labels == truth
    scores = {"classifier": [probs], "reference": [answer_with_reference(index, vectors, labels, probs)]}
    flags = [correct]
    known = truth != ""
    unknown = 0
    if simulate_unknown and known.any() and np.asarray(class_labels).shape[1] >= 2:   # one class: nothing to leave out
        cls, ref = answer_without_own_landmark(index, vectors[known], truth[known], class_labels[known],
                                               class_probs=class_probs[known])
        scores["classifier"].append(cls)
        scores["reference"].append(ref)
        flags.append(np.zeros(len(cls), dtype=bool))
        unknown = len(cls)
    flags = np.concatenate(flags)
    chosen, right = {}, {}
    for mode, parts in scores.items():
        s = np.concatenate(parts)
        chosen[mode] = rejection_threshold(s, flags)
        right[mode] = round(float(np.mean((s >= chosen[mode]) == flags)), 4)
    method = "leave-class-out" if unknown else "non-landmark photos" if (~known).any() else "validation only"
    record = {"method": method, "validation_photos": int(known.sum()), "simulated_unknown": int(unknown),
              "nonlandmark_photos": int((~known).sum()), **chosen, "right_decisions": right}
    return chosen, record


#: Validation photos below which the end of training warns that the "no landmark" threshold
#: rests on few photos (a judgement, not a measurement: with 8 photos one photo moves the
#: share of right decisions by 6 to 12 points, with 50 by about 1 to 2).
FEW_VALIDATION_PHOTOS = 50


def threshold_line(record: dict | None) -> str:
    """How the run's "no landmark" threshold was chosen, and its value, in one line of plain
    words (printed at the end of training); or that none could be chosen, and why."""
    if not record or record.get("method") in (None, "none"):
        reason = (record or {}).get("reason", "the run has no validation photos")
        return (f"no 'no landmark' threshold chosen: {reason}; answers use the default "
                f"({REJECT_THRESHOLD['reference']:g} with the index, {REJECT_THRESHOLD['classifier']:g} without) "
                f"unless --threshold is given")
    val = f"{record['validation_photos']} validation photo{'s' * (record['validation_photos'] != 1)}"
    how = {"leave-class-out": f"without --nonlandmarks, by leave-class-out on {val} (each also scored as if its "
                              f"landmark were unknown)",
           "non-landmark photos": f"on {val} and {record['nonlandmark_photos']} non-landmark photos "
                                  f"({record.get('nonlandmarks_from', '--nonlandmarks')})",
           "validation only": f"on {val} alone (one landmark: none to leave out, and no --nonlandmarks)"}[record["method"]]
    return (f"no-landmark threshold {record['reference']:.4g} (reference score; classifier alone "
            f"{record['classifier']:.3g}), chosen {how}: {record['right_decisions']['reference']:.0%} "
            f"right decisions")


def threshold_warning(record: dict | None) -> str | None:
    """One line warning that the threshold rests on fewer than :data:`FEW_VALIDATION_PHOTOS`
    validation photos (how many); None when it does not, or when none was chosen."""
    if not record or record.get("method") in (None, "none"):
        return None
    photos = int(record.get("validation_photos", 0))
    if photos >= FEW_VALIDATION_PHOTOS:
        return None
    more = "more photos per landmark" + (" or --nonlandmarks (photos without landmarks)"
                                         if record["method"] != "non-landmark photos" else "")
    return (f"warning: the no-landmark threshold rests on only {photos} validation photo{'s' * (photos != 1)} "
            f"(fewer than {FEW_VALIDATION_PHOTOS}): it may answer 'no landmark' too often or too rarely; "
            f"{more} would make it surer")


def build_reference(run_dir: str | Path, nonlandmarks: str | Path | pd.DataFrame | None = None,
                    device: str | None = None, workers: int = 2, splits: tuple[str, ...] = ("train",),
                    thresholds: dict | None = None, reuse: bool = False,
                    nonlandmarks_source: str = "--nonlandmarks") -> dict:
    """Write ``run_dir/index`` and store the thresholds (module docstring).

    Args:
        nonlandmarks: photos without landmarks that help choose the thresholds: a folder or CSV,
            or their frame (``id, path``: a training tree's ``no_landmark/`` photos).
        nonlandmarks_source: how the threshold's record names them (``nonlandmarks_from``).
        splits: the run's splits whose photos are indexed (``train``; after a final fit on
            every labelled photo, ``train`` and ``val``).
        thresholds: keep these (``{"classifier": t, "reference": t}``) instead of choosing
            them on the validation photos (a final fit has none left to choose on).
        reuse: take the vectors of the previous build of this run (its index and validation
            queries, ``run_dir/index/embeddings``) instead of embedding the same photos again,
            when they cover every photo to index.  Only right when the checkpoint's embedding
            has not changed since (a final fit of a head whose embedding is the pooled descriptor).

    Returns:
        ``{"index": path, "count": photos indexed, "reject_threshold": {"classifier": t, "reference": t},
        "threshold_method": how they were chosen (:func:`choose_thresholds`), "threshold_line": the same
        in one line, "threshold_warning": :func:`threshold_warning` (None when there are enough photos), "validation_queries": n,
        "rejects": the validation and non-landmark photos that could not be read (:class:`~landmark.data.Reject`;
        not JSON: the caller lists them in rejects.csv)}`` (thresholds are None, method ``none``, when the run
        has no validation photos).

    Raises:
        FileNotFoundError: ``run_dir`` has no best checkpoint or split.
    """
    run = RunFolder(run_dir)
    best = run.best
    model, ckpt = load_model(best)
    frames = split_frames(run.root)
    work = run.index / "embeddings"
    classes = ckpt["classes"]
    indexed = pd.concat([frames[s] for s in splits], ignore_index=True)
    emb = _copy_embedded(work, indexed, ckpt["preprocess"]["size"]) if reuse else None
    if emb is None:
        emb, _ = embed_images(model, ckpt["preprocess"], indexed, work / "train.npy", device=device,
                              workers=workers, overwrite=True)
    index = LandmarkIndex.build(emb, IndexParams(), {"role": "reference", "model": {"checkpoint": str(best.resolve()),
                                                               "backbone": ckpt["arch"]["backbone"],
                                                               "image_size": ckpt["preprocess"]["size"]}})
    queries = frames["val"][["id", "landmark_id", "path"]] if thresholds is None else frames["val"].iloc[:0]
    if nonlandmarks is not None and thresholds is None:
        extra = nonlandmarks if isinstance(nonlandmarks, pd.DataFrame) else read_queries(nonlandmarks)
        queries = pd.concat([queries, extra[["id", "path"]].assign(landmark_id="")], ignore_index=True)
    kept = thresholds is not None
    thresholds = thresholds or {"classifier": None, "reference": None}
    method = {"method": "none", "reason": "the run has no validation photos (data.val_frac 0, or every "
                                          "landmark too small to spare one)"}
    if kept:
        method = {**ckpt.get("threshold_method", {}), "kept": "chosen before the final fit"}
    unread = []   # validation and non-landmark photos that could not be read: the run's rejects.csv lists them
    if len(queries):
        val, unread = embed_images(model, ckpt["preprocess"], queries, work / "validation.npy", classes=classes,
                              top_classes=min(VALIDATION_TOP, len(classes)), device=device, workers=workers,
                              overwrite=True)
        truth = val.items["landmark_id"].astype(str).to_numpy()
        thresholds, method = choose_thresholds(index, truth, val.classes[0], val.classes[1],
                                               vectors=np.asarray(val.vectors, dtype=np.float32),
                                               # no non-landmark photo read (none given, or every one
                                               # unreadable): leave-class-out, not a threshold of 0
                                               simulate_unknown=not (truth == "").any() and len(classes) > 1)
        if method["method"] == "non-landmark photos":
            method["nonlandmarks_from"] = nonlandmarks_source
    _store_thresholds(best, thresholds, method)   # first: the index records the checkpoint's final SHA-256
    from ..models.runtime import file_sha256
    from .provenance import model_record
    index.meta["model"] = model_record(best, file_sha256(best), ckpt["preprocess"], backbone=ckpt["arch"]["backbone"],
                                       runtime="torch")
    index.save(run.index, overwrite=True)
    return {"index": str(run.index), "count": len(index), "reject_threshold": thresholds,
            "threshold_method": method, "threshold_line": threshold_line(method),
            "threshold_warning": threshold_warning(method),
            "validation_queries": int(len(queries)), "rejects": list(unread)}


def _copy_embedded(work: Path, frame: pd.DataFrame, size: int, chunk: int = 65536) -> Embeddings | None:
    """Write ``work/train.npy`` for the photos of ``frame`` from the vectors that an earlier build
    wrote there (``train.npy``, then ``validation.npy``), as :func:`embed_images` would write them:
    the readable photos in frame order, the unreadable ones in its rejects.  Copied in chunks of
    ``chunk`` rows (float16 ``[N, D]``, memory-mapped).

    Returns:
        the written embeddings; None (nothing written) when a photo of ``frame`` is in neither
        file, or they were embedded at another size.
    """
    names = [name for name in ("train.npy", "validation.npy") if sidecar(work / name, "json").is_file()]
    parts = [load_embeddings(work / name) for name in names]
    infos = [json.loads(sidecar(work / name, "json").read_text()) for name in names]
    where: dict[str, tuple[int, int]] = {}
    for k, part in enumerate(parts):
        for row, image_id in enumerate(part.ids):
            where.setdefault(image_id, (k, row))
    rejects = pd.concat([pd.read_csv(sidecar(work / name, "rejects.csv"), dtype=str, keep_default_na=False)
                         for name in names] or [pd.DataFrame(columns=["id", "path", "reason"])], ignore_index=True)
    ids = frame["id"].astype(str).to_numpy()
    rejects = rejects[rejects["id"].isin(ids) & ~rejects["id"].isin(list(where))].drop_duplicates("id")
    if not parts or any(info.get("image_size") != size for info in infos) or \
            len({p.vectors.dtype for p in parts}) > 1 or not np.isin(ids, [*where, *rejects["id"]]).all():
        return None
    kept = np.flatnonzero(np.isin(ids, list(where)))
    source = np.array([where[i] for i in ids[kept]]).reshape(-1, 2)
    path = work / "train.npy"
    temps = {p: temp_path(p) for p in embedding_files(path)}
    dtype, dim = parts[0].vectors.dtype, parts[0].vectors.shape[1]
    out = NpyRows(temps[path], (len(kept), dim), dtype)   # positional writes: no written page stays resident
    for start in range(0, len(kept), chunk):
        block = source[start:start + chunk]
        rows = np.empty((len(block), dim), dtype=dtype)
        for k, part in enumerate(parts):
            mine = block[:, 0] == k
            rows[mine] = part.vectors[block[mine, 1]]
        out.write(start, rows)
    out.close()
    items = frame.iloc[kept].reset_index(drop=True)
    items[[c for c in ("id", "landmark_id", "path") if c in items.columns]].to_csv(temps[sidecar(path, "ids.csv")],
                                                                                  index=False)
    rejects.to_csv(temps[sidecar(path, "rejects.csv")], index=False)
    commit([(temps[p], p) for p in (path, sidecar(path, "ids.csv"), sidecar(path, "rejects.csv"))],
           sidecar(path, "json"), {**infos[0], "rows": len(kept), "rejects": len(rejects)},
           members=embedding_files(path)[:-1])
    return load_embeddings(path)


def _store_thresholds(checkpoint: Path, thresholds: dict, method: dict) -> None:
    """Add ``reject_threshold`` and ``threshold_method`` to the checkpoint (read with the safe
    loader, written atomically)."""
    ckpt = load_checkpoint_file(checkpoint)
    ckpt["reject_threshold"] = thresholds
    ckpt["threshold_method"] = method
    write_checkpoint(checkpoint, ckpt)
