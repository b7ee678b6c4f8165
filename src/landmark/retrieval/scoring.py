"""The one scoring path: reference scores, ranked candidates, verdicts and enrolment calibration.

Every way of answering (``landmark predict``, ``recognize``, ``knn``, the
:class:`~landmark.inference.recognizer.Recognizer`, the HTTP service, the ONNX fast path) turns
network outputs into an answer with these functions, so the same photo gets the same name,
score and verdict everywhere.  numpy only: no torch, FAISS or pandas is imported here (the
callers search the index and pass the neighbours in).

Scores:

* without an index: the classifier's (voted) softmax probability;
* with an index (the run's ``RUN/index``, a copy of it, or one built with ``landmark index
  build`` from the same checkpoint): :func:`reference_score` ``prob * s_ref ** 3`` for the
  classifier's candidates, where ``s_ref`` is the mean similarity of the query to the 3 closest
  indexed photos of that landmark.  A landmark the classifier was never trained on (enrolled
  later) has no probability; its photos alone speak (``prob = 1``) and it is answered when it
  scores higher than the classifier's own answer.

Verdict (:func:`decide`): a landmark when ``score >= threshold`` of that landmark: its own
calibrated threshold when it was enrolled (:func:`calibrate_landmark`, stored in the index's
``meta['landmark_thresholds']``), else the run's threshold for the scoring mode.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .config import is_stored_threshold

#: Defaults of :func:`reference_score`, chosen by 5-fold cross-validation on the landmarks13
#: train split with ../shared/data/nonlandmarks as non-landmark queries (docs/quality.md): the
#: top 3 same-landmark photos, cubed similarity.
REFERENCE_TOP = 3
REFERENCE_POWER = 3.0
#: neighbours searched per query for :func:`reference_score`
REFERENCE_K = 50
#: photos of a landmark from which enrolment calls it well covered (the reply's advice)
WELL_COVERED = 5
#: neighbours of each enrolled photo looked at for the nearest other landmark
CALIBRATION_K = 50

#: enrolment: the nearest other landmarks whose indexed photos are answered again before and after
#: (:meth:`landmark.inference.recognizer.Recognizer.enrolment_changes`), and at most this many photos of each
IMPACT_LANDMARKS = 3
IMPACT_PHOTOS = 20

NO_LANDMARK = "no landmark"


def reference_score(labels: np.ndarray, probs: np.ndarray, sims: np.ndarray, neighbour_labels: np.ndarray,
                    top: int = REFERENCE_TOP, power: float = REFERENCE_POWER,
                    counts: Mapping[str, int] | None = None) -> np.ndarray:
    """Classifier confidence confirmed by the reference photos of the predicted landmark.

    ``score = prob * s_ref ** power`` where ``s_ref`` is the mean cosine similarity of the
    query to the ``top`` most similar indexed photos labelled with the predicted landmark
    among its neighbours (missing ones count 0, negative similarities 0).  The softmax alone
    cannot say "none of these": over known landmarks it sums to 1 even for a photo of a dog.
    A photo of no landmark, or of a landmark the model never learnt, is far from every
    reference photo of its predicted class, so its score falls to the bottom (Kaggle GLR 2020
    winners re-score classifier predictions by retrieval similarity in the same spirit:
    Henkel & Singer, arXiv:2010.01650).

    Args:
        labels: str ``[Q]`` predicted landmark of each query.
        probs: float ``[Q]`` its softmax probability (1 for a landmark the classifier lacks).
        sims: float ``[Q, k]`` similarities of the query's ``k`` nearest indexed photos
            (-inf where fewer exist).
        neighbour_labels: str ``[Q, k]`` their landmarks.
        counts: photos per landmark in the index; a landmark with fewer than ``top`` photos
            averages over the ones it has (an enrolled landmark of 1 or 2 photos is not
            marked down for the photos it lacks).  None: always ``top``.

    Returns:
        float64 ``[Q]`` in [0, 1].

    Raises:
        ValueError: shapes disagree, or ``top`` < 1.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, not {top}")
    labels = np.asarray(labels, dtype=str)
    if sims.shape != neighbour_labels.shape or len(sims) != len(labels) or len(labels) != len(probs):
        raise ValueError(f"shapes disagree: labels {labels.shape}, probs {np.shape(probs)}, sims {sims.shape}, "
                         f"neighbour_labels {neighbour_labels.shape}")
    same = neighbour_labels.astype(str) == labels[:, None]
    s = np.where(same & np.isfinite(sims), np.clip(sims, 0.0, None), 0.0)
    top_sims = -np.sort(-s, axis=1)[:, :top]
    if top_sims.shape[1] < top:
        top_sims = np.pad(top_sims, ((0, 0), (0, top - top_sims.shape[1])))
    n = np.full(len(labels), float(top))
    if counts is not None:
        n = np.array([min(top, max(1, int(counts.get(lab, top)))) for lab in labels], dtype=np.float64)
    mean = np.array([row[:int(k)].sum() / k for row, k in zip(top_sims, n)]) if len(labels) else np.zeros(0)
    return np.asarray(probs, dtype=np.float64) * mean ** power


def rank(class_labels: np.ndarray, class_scores: np.ndarray, sims: np.ndarray | None = None,
         neighbour_labels: np.ndarray | None = None, known: set[str] | frozenset[str] | None = None,
         counts: Mapping[str, int] | None = None) -> list[list[tuple[str, float]]]:
    """Ranked candidates ``[(landmark_id, score), ...]`` of each query (module docstring).

    Args:
        class_labels: str ``[Q, t]`` the classifier's candidates, its best first.
        class_scores: float ``[Q, t]`` their (voted) probabilities.
        sims, neighbour_labels: float / str ``[Q, k]`` the query's nearest indexed photos and
            their landmarks (None: no index; the classifier's scores as they are).
        known: the landmarks the classifier was trained on; indexed landmarks outside it
            (enrolled) become candidates scored by their photos alone.  None: every landmark.
        counts: photos per landmark in the index (:func:`reference_score`).

    Returns:
        Q lists: the classifier's candidates in its order, each with its reference score; an
        enrolled landmark that outscores the classifier's first answer comes first, the others
        after the classifier's candidates (best first).
    """
    class_labels = np.asarray(class_labels).astype(str)
    class_scores = np.asarray(class_scores, dtype=np.float64)
    if sims is None:
        return [[(lab, float(s)) for lab, s in zip(labs, scores)] for labs, scores in zip(class_labels, class_scores)]
    scores = np.stack([reference_score(class_labels[:, j], class_scores[:, j], sims, neighbour_labels,
                                       counts=counts) for j in range(class_labels.shape[1])], axis=1) \
        if class_labels.shape[1] else np.zeros((len(sims), 0))
    ranked = []
    for q in range(len(sims)):
        cands = [(lab, float(s)) for lab, s in zip(class_labels[q], scores[q])]
        extra = [] if known is None else sorted({str(n) for n in neighbour_labels[q] if n and str(n) not in known})
        if extra:
            ones = np.ones(len(extra))
            own = reference_score(np.array(extra), ones, np.repeat(sims[q:q + 1], len(extra), 0),
                                  np.repeat(neighbour_labels[q:q + 1], len(extra), 0), counts=counts)
            enrolled = sorted(zip(extra, own.tolist()), key=lambda c: -c[1])
            first = cands[0][1] if cands else -1.0
            cands = [c for c in enrolled if c[1] > first] + cands + [c for c in enrolled if c[1] <= first]
        ranked.append(cands)
    return ranked


def threshold_for(landmark_id: str, default: float, landmark_thresholds: Mapping[str, dict | float] | None = None) -> float:
    """The "no landmark" threshold of one landmark: its calibrated one (enrolled landmarks,
    :func:`calibrate_landmark`), else ``default`` (the run's threshold for the scoring mode)."""
    own = (landmark_thresholds or {}).get(str(landmark_id))
    if isinstance(own, Mapping):
        own = own.get("threshold")
    return float(default) if own is None else float(own)


def checked_landmark_thresholds(meta: Mapping) -> dict:
    """An index's ``meta['landmark_thresholds']`` (``{}`` when none), each threshold checked,
    so an edited or damaged ``meta.json`` is refused when the index loads rather than by a
    ``float()`` crash mid-run, or a NaN that silently makes a landmark never answered.

    Raises:
        ValueError: not a mapping, or a threshold that is not a finite number in [0, 1] (the
            float just above 1 that "no photo is right" chooses included).
    """
    raw = meta.get("landmark_thresholds") or {}
    if not isinstance(raw, Mapping):
        raise ValueError("the index's landmark_thresholds is not an object: enrol the landmarks again or remove it "
                         "from meta.json")
    for lid, own in raw.items():
        value = own.get("threshold") if isinstance(own, Mapping) else own
        if not is_stored_threshold(value):
            raise ValueError(f"the index's calibrated threshold of landmark {lid} is {value!r}, not a number in "
                             f"[0, 1]: enrol its photos again (landmark index add) or remove it from meta.json")
    return dict(raw)


def decide(landmark_id: str, score: float, default: float,
           landmark_thresholds: Mapping[str, dict | float] | None = None,
           inliers: int | None = None, min_inliers: int | None = None) -> tuple[bool, float]:
    """The verdict on one answer: ``(is_landmark, threshold used)``; no landmark id or a NaN
    score is never a landmark.  The one place a verdict is decided (module docstring).

    ``inliers``: local-feature inliers between the query and the answer's photos (enrolled
    landmarks, :func:`confirm`); ``inliers >= min_inliers`` names the landmark whatever its score."""
    threshold = threshold_for(landmark_id, default, landmark_thresholds)
    geometric = inliers is not None and min_inliers is not None and inliers >= min_inliers
    return bool(landmark_id) and (bool(score >= threshold) or geometric), threshold


def needs_confirmation(cands: list[tuple[str, float]], known, default: float,
                       landmark_thresholds: Mapping[str, dict | float] | None = None) -> bool:
    """Whether a query's enrolled landmarks are matched by local features (:func:`confirm`):
    unless its answer is already a landmark the classifier knows, named by its global score
    (a confident answer of a trained landmark is not overturned by a few enrolled photos, and
    costs no local features).

    Args:
        cands: ``[(landmark_id, score), ...]`` best first (:func:`rank`'s answer for one query).
        known: the classifier's landmarks; default, landmark_thresholds: as :func:`decide`.
    """
    if not cands:
        return True
    lid, score = cands[0]
    return not (lid in known and decide(lid, score, default, landmark_thresholds)[0])


def confirm(cands: list[tuple[str, float]], inliers: Mapping[str, int], min_inliers: int) -> list[tuple[str, float]]:
    """Candidates re-ordered by geometric confirmation of enrolled landmarks.

    An enrolled landmark with ``inliers[lid] >= min_inliers`` (its best photo's local-feature
    inliers with the query, :mod:`landmark.retrieval.confirm`) comes first (most inliers
    first), added when the global ranking lacked it, with its reference score (0 when it had
    none); the other candidates keep their order.  Few photos of a landmark rarely make its
    global similarity stand out from its nearest landmark's (docs/quality.md), a shared
    geometry does (Philbin et al., "Object retrieval with large vocabularies and fast spatial
    matching", CVPR 2007: spatial verification of retrieval candidates).

    Args:
        cands: ``[(landmark_id, score), ...]`` best first (:func:`rank`'s answer for one query).
        inliers: landmark id -> counted inliers of the best of its photos.
        min_inliers: the same-landmark threshold
            (:func:`landmark.retrieval.config.same_landmark_inliers`).
    """
    confirmed = sorted((lid for lid, n in inliers.items() if n >= min_inliers), key=lambda lid: -inliers[lid])
    if not confirmed:
        return cands
    score = dict(cands)
    return [(lid, float(score.get(lid, 0.0))) for lid in confirmed] + [c for c in cands if c[0] not in confirmed]


def verdict(name: str, is_landmark: bool) -> str:
    """The words shown for an answer: the landmark's name, or ``no landmark``."""
    return name if is_landmark else NO_LANDMARK


def leave_class_out(truth: np.ndarray, class_labels: np.ndarray, class_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a landmark the model never learnt looks like, simulated with labelled photos.

    Each photo is answered as if its own landmark were not among the classes: its best
    remaining class, with the softmax renormalised over the remaining classes
    (``p_other / (1 - p_own)``).  A photo whose own class is not among the ``t`` candidates
    given keeps the first candidate's probability (``p_own`` taken as 0: a lower bound).

    Args:
        truth: str ``[Q]`` each photo's landmark.
        class_labels: str ``[Q, t]`` the classifier's top-t (t >= 2), best first.
        class_probs: float ``[Q, t]`` their probabilities.

    Returns:
        (str ``[Q]`` the best other landmark, float64 ``[Q]`` its renormalised probability).

    Raises:
        ValueError: fewer than 2 candidates per photo (a model of one class has no other landmark
            to answer: each photo would "answer" its own landmark with probability 1, flagged wrong).
    """
    truth = np.asarray(truth, dtype=str)
    labels, probs = np.asarray(class_labels).astype(str), np.asarray(class_probs, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] < 2:
        raise ValueError(f"leave-class-out needs the top 2 or more classes of each photo, got shape {labels.shape}")
    own = labels == truth[:, None]
    p_own = np.where(own, probs, 0.0).sum(1)
    first_other = np.argmax(~own, axis=1)
    rows = np.arange(len(truth))
    other = labels[rows, first_other]
    p = probs[rows, first_other] / np.clip(1.0 - p_own, 1e-12, None)
    return other, np.clip(p, 0.0, 1.0)


def calibrate_landmark(own: np.ndarray, neighbour_sims: np.ndarray, neighbour_rows: np.ndarray,
                       neighbour_labels: np.ndarray, landmark_id: str, default: float, name_of=str) -> dict:
    """The threshold and coverage of an enrolled landmark, from its photos alone.

    Positives: each photo of the landmark scored (:func:`reference_score`, ``prob = 1``) against
    its other photos (leave one out).  Impostors: the indexed photos of other landmarks closest
    to its photos, each scored against its photos as if it were a query (its similarities to
    them, the ones not among the neighbours counting 0): the best of them is what a photo of its
    nearest landmark scores.  The threshold sits halfway between the best impostor and the
    weakest positive when they are apart (at the best impostor otherwise), and never below
    ``default``, the run's own threshold.

    Args:
        own: float32 ``[n, D]`` L2-normalised embeddings of the landmark's photos (all of them).
        neighbour_sims: float ``[n, k]`` similarity of each of its photos to its nearest indexed
            photos (-inf: none); neighbour_rows: int ``[n, k]`` their index rows (-1: none);
            neighbour_labels: str ``[n, k]`` their landmarks (its own photos are skipped).
        landmark_id: the landmark; default: the run's threshold (the floor).
        name_of: landmark id -> readable name (for the advice).

    Returns:
        ``{threshold, photos, self_similarity, nearest_landmark, nearest_name, nearest_similarity,
        positive_scores, impostor_score, photos_nearest_own, distinct, coverage, advice, summary}``
        (JSON-ready; ``coverage``: ``good`` from :data:`WELL_COVERED` (5) photos most of which are
        closest to another of its own, ``fair`` from 5 photos otherwise or from 3 most of which
        are, ``poor`` else; ``photos_nearest_own``: how
        many of its photos are more similar to another of its own than to any other landmark's
        (None with one photo); ``distinct``: that and the nearest landmark in words;
        ``summary``: one sentence of photos, distinctness, coverage and advice).
    """
    own = np.asarray(own, dtype=np.float32)
    n = len(own)
    gram = own @ own.T
    pos = []
    for i in range(n):   # leave-one-out: photo i against the landmark's other photos
        others = np.sort(np.clip(np.delete(gram[i], i), 0, 1))[::-1]   # float32 rounding: 1.0000001 for a copy
        if len(others):
            pos.append(float(np.mean(others[:min(REFERENCE_TOP, len(others))]) ** REFERENCE_POWER))
    self_sim = float(np.mean(gram[~np.eye(n, dtype=bool)])) if n > 1 else None
    sims = np.asarray(neighbour_sims, dtype=np.float64)
    labels = np.asarray(neighbour_labels).astype(str)
    rows = np.asarray(neighbour_rows)
    valid = (rows >= 0) & (labels != "") & (labels != str(landmark_id)) & np.isfinite(sims)
    nearest, nearest_sim, impostor = None, None, 0.0
    if valid.any():
        best = np.unravel_index(int(np.argmax(np.where(valid, sims, -np.inf))), sims.shape)
        nearest, nearest_sim = labels[best], float(sims[best])
        per_row: dict[int, np.ndarray] = {}
        for i, j in zip(*np.nonzero(valid)):
            per_row.setdefault(int(rows[i, j]), np.zeros(n))[i] = min(max(float(sims[i, j]), 0.0), 1.0)
        top = min(REFERENCE_TOP, n)
        impostor = max(float(np.mean(np.sort(v)[::-1][:top]) ** REFERENCE_POWER) for v in per_row.values())
    # distinct from its nearest neighbours: each photo's most similar photo is one of its own
    own_best = [float(np.max(np.delete(gram[i], i))) for i in range(n)] if n > 1 else []
    other_best = [float(np.max(np.where(valid[i], sims[i], -np.inf))) for i in range(len(sims))]
    apart = sum(1 for a, b in zip(own_best, other_best) if a > b) if own_best else None
    weakest = min(pos) if pos else None
    threshold = impostor if weakest is None or weakest <= impostor else (impostor + weakest) / 2
    threshold = float(max(threshold, default))
    # coverage from how many photos and how distinct they are (chosen on landmarks_many's choosing set,
    # benchmarks/enrolment.py: landmarks most of whose photos are closest to their own had more of
    # their other photos recognised; the earlier rule, mean own similarity against the single most
    # similar other photo, called nearly every landmark poor, those recognised best included)
    # (asking every photo to be closest to its own, 2026-12-08, split the choosing set's landmarks worse:
    # good 0.70 / fair 0.76 of their other photos recognised, against 0.81 / 0.64 for "most": not kept)
    most_apart = apart is not None and 2 * apart > n
    if n >= WELL_COVERED and most_apart:
        coverage = "good"
    elif n >= WELL_COVERED or (n >= 3 and most_apart):
        coverage = "fair"
    else:
        coverage = "poor"
    advice = []
    if n < WELL_COVERED:
        advice.append(f"add {WELL_COVERED - n} more photo{'s' if WELL_COVERED - n > 1 else ''} from other sides "
                      f"and distances")
    if nearest is not None and apart is not None and apart < n:   # partly or hardly distinct
        closer = n - apart
        who = "most of its photos look" if 2 * closer > n else f"{closer} of its {n} photos look{'s' * (closer == 1)}"
        if coverage == "good":   # enough to be recognised; what would still help, said as such
            advice.append(f"enough photos to be recognised, though {who} more like a photo of {name_of(nearest)} "
                          f"than like its own: photos from other viewpoints would set it further apart")
        else:
            advice.append(f"{who} more like a photo of {name_of(nearest)} than like its own: add photos from other "
                          f"viewpoints that show what sets it apart")
    elif weakest is not None and weakest < threshold and coverage != "good":
        advice.append("some of its photos are unlike the others: add photos between those views")
    # good coverage asks for nothing more: the advice agrees with the rating
    advice = "; ".join(advice) or "no more photos needed"
    own_closest = max(own_best) if own_best else None   # the most alike pair of its own: like for like with nearest_sim
    distinct = _distinct_words(n, apart, own_sim=own_closest, nearest_sim=nearest_sim,
                               nearest_name=None if nearest is None else name_of(nearest))
    return {"threshold": threshold, "photos": n,
            "self_similarity": None if self_sim is None else round(self_sim, 4),
            "nearest_landmark": nearest, "nearest_name": None if nearest is None else name_of(nearest),
            "nearest_similarity": None if nearest_sim is None else round(nearest_sim, 4),
            "positive_scores": [round(p, 6) for p in pos], "impostor_score": round(impostor, 6),
            "photos_nearest_own": apart, "distinct": distinct, "coverage": coverage, "advice": advice,
            "summary": coverage_summary(n, distinct, coverage, advice)}


def coverage_summary(photos: int, distinct: str, coverage: str, advice: str) -> str:
    """The enrolment reply's one sentence: how many photos, how distinct, how well covered, what would help."""
    return f"{photos} photo{'s' if photos != 1 else ''}; {distinct}; coverage {coverage}: {advice}"


def _distinct_words(n: int, apart: int | None, *, own_sim: float | None, nearest_sim: float | None,
                    nearest_name: str | None) -> str:
    """How distinct an enrolled landmark is from its nearest neighbours, in words (the reply's ``distinct``).

    ``nearest_sim`` is the similarity of the most alike pair of one of its photos and another
    landmark's, ``own_sim`` that of the most alike pair of its own photos: like for like, so the
    numbers never contradict the words (every photo closer to one of its own than to any other
    landmark's gives ``own_sim > nearest_sim``, none ``own_sim < nearest_sim``).  Before, ``own_sim``
    was the mean over all pairs of its photos, which read "similarity 0.60 against 0.43 among its
    own photos ...: distinct" for a landmark of two close views and a third far from both."""
    if nearest_name is None:
        return "no other landmark is indexed near it"
    near = f"its nearest other landmark is {nearest_name} (similarity {nearest_sim:.2f}"
    if n < 2:
        return f"{near}); with one photo how alike its own photos are is unknown"
    near += f", against {own_sim:.2f} between its own two most alike photos)"
    if apart == n:
        return f"{near}; each of its photos is closest to another of its own: distinct"
    if apart == 0:
        return f"{near}; none of its {n} photos is closest to another of its own: hardly distinct"
    return (f"{near}; {apart} of its {n} photos {'is' if apart == 1 else 'are'} closest to another of its own, "
            f"the {'other' if n - apart == 1 else f'other {n - apart}'} to another landmark's: partly distinct")


def counts_of(labels: Sequence[str] | np.ndarray) -> dict[str, int]:
    """Photos per landmark (``labels``: str ``[N]``, an index's labels)."""
    values, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def changes_summary(truth: Sequence[str], before: Sequence[tuple[str, bool]], after: Sequence[tuple[str, bool]],
                    new: str, unreadable: int = 0, name_of=str) -> dict:
    """How an enrolment changes the answers for indexed photos of other landmarks (the enrolment
    reply's ``answers_changed``).

    Args:
        truth: str ``[n]`` each photo's own landmark; before, after: ``(landmark_id, is_landmark)``
            of its answer against the index before and after the enrolment (:func:`decide`).
        new: the landmark enrolled; unreadable: photos that could not be read (not checked).

    Returns:
        ``{checked, right_before, changed, to_new, to_no_landmark, to_other, unreadable,
        landmarks: [{landmark_id, name, checked, right_before, changed, to_new, to_no_landmark, to_other}],
        summary}``: ``right_before`` photos answered as their own landmark before; ``changed``
        of them answered otherwise after: as ``new`` (``to_new``), "no landmark" or another
        landmark; ``summary``: that in one sentence.
    """
    per: dict[str, dict] = {}
    for lid, (b, b_ok), (a, a_ok) in zip(truth, before, after):
        row = per.setdefault(lid, {"landmark_id": lid, "name": name_of(lid), "checked": 0, "right_before": 0,
                                   "changed": 0, "to_new": 0, "to_no_landmark": 0, "to_other": 0})
        row["checked"] += 1
        if b == lid and b_ok:
            row["right_before"] += 1
            if not (a == lid and a_ok):
                row["changed"] += 1
                row["to_new" if a == new and a_ok else "to_no_landmark" if not a_ok else "to_other"] += 1
    rows = list(per.values())
    total = {k: sum(r.get(k, 0) for r in rows) for k in ("checked", "right_before", "changed", "to_new",
                                                         "to_no_landmark", "to_other")}
    names = ", ".join(r["name"] for r in rows)
    if not rows:
        summary = "no other landmark's photos could be checked"
    elif total["changed"] == 0:
        summary = (f"it changes none of the {total['right_before']} answers that were right for the photos of its "
                   f"nearest landmarks checked ({names})")
    else:
        hit = "; ".join(f"{r['name']}: {r['changed']} of {r['right_before']}" for r in rows if r["changed"])
        how = ", ".join(f"{n} {what}" for n, what in ((total["to_new"], f"as {name_of(new)}"),
                                                      (total["to_no_landmark"], "as no landmark"),
                                                      (total["to_other"], "as another landmark")) if n)
        summary = (f"it changes {total['changed']} of the {total['right_before']} answers that were right for the photos "
                   f"of its nearest landmarks checked ({hit}), now {how}")
    if unreadable:
        summary += f" ({unreadable} of their indexed photos could not be read: not checked)"
    return {**total, "unreadable": int(unreadable), "landmarks": rows, "summary": summary}
