"""Landmark recognition by nearest-neighbour voting over an index of labelled photos.

Scores of query ``q`` for landmark ``l`` (each step optional after the first):

1. kNN vote over the ``k`` most similar indexed photos ``j`` (cosine similarity ``s_j``):
   ``knn(l) = 1/k * sum_{j: label_j = l} max(s_j, 0) ** p`` -- a similarity-weighted vote
   in [0, 1]; ``p > 1`` lets close matches outweigh many loose ones (as in the GLDv2
   recognition winners' kNN, e.g. Henkel & Singer 2020 below).
2. Classifier: ``score(l) = (1 - w) * knn(l) + w * prob(l)`` with the classifier's softmax
   ``prob`` (0 for landmarks it was not trained on, e.g. enrolled later).
3. Non-landmark penalty (Henkel & Singer, "Supporting large-scale image recognition with
   out-of-domain samples", arXiv:2010.01650, 1st place Kaggle GLR 2020): with a set of
   photos that show no landmark, ``score -= lambda * 1/k' * sum_{top-k' non-landmarks}
   max(s, 0) ** p`` -- a query that looks like the non-landmarks as much as like its
   landmark drops to the bottom of the GAP ranking.  Optionally queries scoring below a
   threshold get no prediction.
4. Geometric verification re-ranking (:func:`verify_rerank`), a separate step given a
   ``pair_inliers`` callable: the best candidate is re-chosen with a bonus for RANSAC
   inliers, and queries that no candidate matches are ranked last.

The prediction of a query is its best landmark and that score (one per query, as GAP wants).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np
import pandas as pd
from tqdm import tqdm

from ..data import ImageError
from .embeddings import Embeddings, iter_chunks
from .index import LandmarkIndex

#: ``pair_inliers(query_id, query_path, item_id, item_path) -> RANSAC inliers``.
PairInliers = Callable[[str, str, str, str], int]


@dataclass
class KnnConfig:
    """Parameters of :func:`recognise` (see the module docstring for the formulas).

    Attributes:
        k: neighbours that vote.
        p: similarity exponent.
        classifier_weight: ``w``; 0 = kNN only (needs classifier top-k in the queries).
        nonlandmark_k: ``k'`` non-landmark neighbours for the penalty.
        nonlandmark_weight: ``lambda``; 0 = no penalty.
        reject_below: queries whose final score is below this get no prediction (None: keep all).
        verify_top: neighbours verified per query (0 = no verification).
        verify_weight: bonus for a landmark whose best verified photo has ``inlier_cap`` inliers.
        inlier_cap: inliers at which the bonus saturates.
        min_inliers: a query with no verified photo reaching this is ranked after all others.
    """

    k: int = 10
    p: float = 3.0
    classifier_weight: float = 0.0
    nonlandmark_k: int = 5
    nonlandmark_weight: float = 1.0
    reject_below: float | None = None
    verify_top: int = 0
    verify_weight: float = 1.0
    inlier_cap: int = 50
    min_inliers: int = 20


def vote(sims: np.ndarray, labels: np.ndarray, p: float = 3.0) -> pd.DataFrame:
    """Similarity-weighted kNN vote.

    Args:
        sims: float ``[Q, k]`` similarities of each query's neighbours (-inf: none).
        labels: str ``[Q, k]`` landmark of each neighbour.
        p: exponent of ``max(s, 0)``.

    Returns:
        long frame ``query`` (row 0..Q-1), ``landmark_id``, ``knn`` = ``1/k * sum s^p`` per
        (query, landmark) among the neighbours, sorted by query then knn descending.
    """
    q, k = sims.shape
    weights = np.where(np.isfinite(sims), np.clip(sims, 0.0, None), 0.0) ** p / k
    frame = pd.DataFrame({"query": np.repeat(np.arange(q), k), "landmark_id": labels.reshape(-1),
                          "knn": weights.reshape(-1)})
    frame = frame[np.isfinite(sims).reshape(-1)]
    out = frame.groupby(["query", "landmark_id"], sort=False, observed=True)["knn"].sum().reset_index()
    return out.sort_values(["query", "knn"], ascending=[True, False], kind="mergesort").reset_index(drop=True)


def add_classifier(candidates: pd.DataFrame, top_labels: np.ndarray, top_probs: np.ndarray,
                   weight: float) -> pd.DataFrame:
    """Blend kNN with the classifier: ``score = (1 - weight) * knn + weight * prob``.

    Args:
        candidates: :func:`vote` output (``query, landmark_id, knn``).
        top_labels: str ``[Q, t]`` classifier's top-t landmarks per query.
        top_probs: float ``[Q, t]`` their softmax probabilities.

    Returns:
        frame ``query, landmark_id, knn, prob, score`` over the union of both candidate
        sets (missing knn or prob count 0).
    """
    q, t = top_labels.shape
    cls = pd.DataFrame({"query": np.repeat(np.arange(q), t), "landmark_id": top_labels.reshape(-1).astype(str),
                        "prob": top_probs.reshape(-1).astype(np.float64)})
    merged = candidates.merge(cls, on=["query", "landmark_id"], how="outer").fillna({"knn": 0.0, "prob": 0.0})
    merged["score"] = (1.0 - weight) * merged["knn"] + weight * merged["prob"]
    return merged


#: Defaults of :func:`reference_confidence`, chosen by 5-fold cross-validation on the
#: landmarks13 train split with ../shared/data/nonlandmarks as non-landmark queries
#: (docs/quality.md): the top 3 same-landmark photos, cubed similarity.
REFERENCE_TOP = 3
REFERENCE_POWER = 3.0


def reference_confidence(labels: np.ndarray, probs: np.ndarray, sims: np.ndarray, neighbour_labels: np.ndarray,
                         top: int = REFERENCE_TOP, power: float = REFERENCE_POWER) -> np.ndarray:
    """Classifier confidence confirmed by the reference photos of the predicted landmark.

    ``conf = prob * s_ref ** power`` where ``s_ref`` is the mean cosine similarity of the
    query to the ``top`` most similar indexed photos labelled with the predicted landmark
    among its neighbours (missing ones count 0, negative similarities 0).  The softmax
    alone cannot say "none of these": over known landmarks it sums to 1 even for a photo
    of a dog.  A photo of no landmark, or of a landmark the model never learnt, is far
    from every reference photo of its predicted class, so its confidence falls to the
    bottom of the GAP ranking (Kaggle GLR 2020 winners re-score classifier predictions by
    retrieval similarity in the same spirit: Henkel & Singer, arXiv:2010.01650).

    Args:
        labels: str ``[Q]`` predicted landmark of each query.
        probs: float ``[Q]`` its softmax probability.
        sims: float ``[Q, k]`` similarities of the query's ``k`` nearest indexed photos
            (-inf where fewer exist).
        neighbour_labels: str ``[Q, k]`` their landmarks.

    Returns:
        float64 ``[Q]`` in [0, 1].

    Raises:
        ValueError: shapes disagree, or ``top`` < 1.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, not {top}")
    if sims.shape != neighbour_labels.shape or len(sims) != len(labels) or len(labels) != len(probs):
        raise ValueError(f"shapes disagree: labels {labels.shape}, probs {probs.shape}, sims {sims.shape}, "
                         f"neighbour_labels {neighbour_labels.shape}")
    same = neighbour_labels.astype(str) == np.asarray(labels, dtype=str)[:, None]
    s = np.where(same & np.isfinite(sims), np.clip(sims, 0.0, None), 0.0)
    top_sims = -np.sort(-s, axis=1)[:, :top]
    if top_sims.shape[1] < top:
        top_sims = np.pad(top_sims, ((0, 0), (0, top - top_sims.shape[1])))
    return np.asarray(probs, dtype=np.float64) * top_sims.mean(1) ** power


def nonlandmark_similarity(queries: np.ndarray, nonlandmarks: np.ndarray, k: int = 5, p: float = 3.0,
                           chunk: int = 4096) -> np.ndarray:
    """``1/k' * sum max(s, 0) ** p`` over each query's ``k'`` most similar non-landmark photos.

    Args:
        queries: ``[Q, D]`` L2-normalised.
        nonlandmarks: ``[R, D]`` L2-normalised reference photos without landmarks.

    Returns:
        float64 ``[Q]`` in [0, 1], on the same scale as :func:`vote`'s ``knn``.

    Raises:
        ValueError: dimensions differ, or no reference photos.
    """
    if len(nonlandmarks) == 0:
        raise ValueError("the non-landmark reference set is empty")
    if queries.shape[1] != nonlandmarks.shape[1]:
        raise ValueError(f"queries have dimension {queries.shape[1]}, non-landmarks {nonlandmarks.shape[1]}")
    ref = faiss.IndexFlatIP(nonlandmarks.shape[1])
    for _, x in iter_chunks(nonlandmarks):
        ref.add(x)
    k = min(k, ref.ntotal)
    out = np.empty(len(queries))
    for start, x in iter_chunks(queries, chunk):
        s, _ = ref.search(x, k)
        out[start:start + len(x)] = (np.clip(s, 0.0, None) ** p).mean(1)
    return out


def best_per_query(candidates: pd.DataFrame, n_queries: int) -> pd.DataFrame:
    """The highest-``score`` landmark of each query: ``query, landmark_id, score`` (Q rows;
    a query without candidates gets landmark_id '' and score NaN)."""
    ranked = candidates.sort_values(["query", "score"], ascending=[True, False], kind="mergesort")
    best = ranked.drop_duplicates("query").set_index("query")
    out = pd.DataFrame({"query": np.arange(n_queries)})
    out["landmark_id"] = best["landmark_id"].reindex(out["query"]).fillna("").to_numpy()
    out["score"] = best["score"].reindex(out["query"]).to_numpy(dtype=np.float64)
    return out


def verify_rerank(candidates: pd.DataFrame, neighbours: np.ndarray, sims: np.ndarray, query_items: pd.DataFrame,
                  index_items: pd.DataFrame, pair_inliers: PairInliers, top: int, weight: float = 1.0,
                  inlier_cap: int = 50, min_inliers: int = 20) -> pd.DataFrame:
    """Re-rank candidates by geometric verification of each query's top neighbours.

    For query ``q`` the first ``top`` neighbours (by global similarity) are verified;
    landmark ``l`` gets ``score += weight * min(m_l, inlier_cap) / inlier_cap`` where
    ``m_l`` is the most inliers of a verified photo of ``l``.  A query none of whose
    verified photos reaches ``min_inliers`` gets ``score -= 10`` (ranked after every
    matched query, keeping its order among the unmatched).  A pair whose inliers cannot
    be computed (unreadable image: ``pair_inliers`` raises ``ImageError``/``OSError``/
    ``ValueError``) counts 0 inliers and is listed in the returned ``failures`` column.

    Args:
        candidates: ``query, landmark_id, score`` (+ other columns, kept).
        neighbours: int ``[Q, k]`` rows of ``index_items`` (-1: none), by similarity.
        sims: float ``[Q, k]`` their similarities (used only to skip empty slots).
        query_items / index_items: ``id`` and ``path`` of queries / indexed photos.
        pair_inliers: ``(query_id, query_path, item_id, item_path) -> int``.

    Returns:
        candidates with ``inliers`` (best per landmark, 0 if unverified) and the new
        ``score``, plus landmarks found only among verified neighbours; ``attrs['max_inliers']``
        is float ``[Q]`` and ``attrs['failures']`` a list of ``(query_id, item_id, reason)``.
    """
    q_ids = query_items["id"].astype(str).to_numpy()
    q_paths = query_items["path"].astype(str).to_numpy()
    i_ids = index_items["id"].astype(str).to_numpy()
    i_paths = index_items["path"].astype(str).to_numpy()
    i_labels = index_items["landmark_id"].astype(str).to_numpy()
    rows, failures = [], []
    max_inliers = np.zeros(len(q_ids))
    for q in tqdm(range(len(q_ids)), desc=f"verify top-{top}", unit="query", dynamic_ncols=True):
        for j, s in zip(neighbours[q, :top], sims[q, :top]):
            if j < 0 or not np.isfinite(s):
                continue
            try:
                m = int(pair_inliers(q_ids[q], q_paths[q], i_ids[j], i_paths[j]))
            except (ImageError, OSError, ValueError) as err:  # one bad photo must not end a long run
                failures.append((q_ids[q], i_ids[j], str(err)))
                m = 0
            rows.append((q, i_labels[j], m))
            max_inliers[q] = max(max_inliers[q], m)
    verified = pd.DataFrame(rows, columns=["query", "landmark_id", "inliers"])
    verified = verified.groupby(["query", "landmark_id"], as_index=False)["inliers"].max()
    out = candidates.drop(columns=["inliers"], errors="ignore").merge(verified, on=["query", "landmark_id"],
                                                                      how="outer")
    out["inliers"] = out["inliers"].fillna(0).astype(int)
    for col in ("knn", "prob"):
        if col in out:
            out[col] = out[col].fillna(0.0)
    out["score"] = out["score"].fillna(0.0) + weight * np.minimum(out["inliers"], inlier_cap) / inlier_cap
    unmatched = max_inliers[out["query"].to_numpy()] < min_inliers
    out.loc[unmatched, "score"] -= 10.0
    out.attrs["max_inliers"] = max_inliers
    out.attrs["failures"] = failures
    return out


@dataclass
class Recognition:
    """Result of :func:`recognise`.

    Attributes:
        predictions: ``id, landmark_id, score`` (one row per query; Kaggle submission input).
        candidates: all scored (query, landmark) pairs with their parts (knn, prob, inliers).
        nonlandmark: float ``[Q]`` penalty term before ``lambda`` (None without reference set).
        max_inliers: float ``[Q]`` best inliers per query (None without verification).
        failures: verification pairs that could not be computed ``(query_id, item_id, reason)``.
    """

    predictions: pd.DataFrame
    candidates: pd.DataFrame
    nonlandmark: np.ndarray | None = None
    max_inliers: np.ndarray | None = None
    failures: list | None = None


def recognise(index: LandmarkIndex, queries: Embeddings, config: KnnConfig | None = None,
              nonlandmarks: Embeddings | None = None, pair_inliers: PairInliers | None = None) -> Recognition:
    """Predict one landmark per query by kNN voting (module docstring, steps 1-4).

    Args:
        index: labelled photos.
        queries: query embeddings; ``queries.classes`` is needed when
            ``config.classifier_weight > 0``; ``queries.items['path']`` for verification.
        nonlandmarks: reference photos without landmarks for the penalty (None: no penalty).
        pair_inliers: geometric verification callable (None: no re-ranking).

    Raises:
        ValueError: dimension mismatch, classifier weight without stored classifier
            scores, or ``verify_top > 0`` without ``pair_inliers``.
    """
    config = config or KnnConfig()
    if queries.vectors.shape[1] != index.dim:
        raise ValueError(f"queries have dimension {queries.vectors.shape[1]}, the index {index.dim} "
                         "(embed them with the index's checkpoint)")
    if config.classifier_weight > 0 and queries.classes is None:
        raise ValueError("classifier_weight > 0 needs classifier scores (embed the queries with top classes)")
    if config.verify_top > 0 and pair_inliers is None:
        raise ValueError("verify_top > 0 needs a pair_inliers callable (geometric verification)")
    n = len(queries)
    sims, neighbours = index.search(queries.vectors, max(config.k, config.verify_top))
    labels = np.where(neighbours >= 0, index.labels[np.clip(neighbours, 0, None)], "")
    candidates = vote(sims[:, :config.k], labels[:, :config.k], config.p)
    if config.classifier_weight > 0:
        candidates = add_classifier(candidates, queries.classes[0], queries.classes[1], config.classifier_weight)
    else:
        candidates = candidates.assign(score=candidates["knn"])
    penalty = None
    if nonlandmarks is not None and config.nonlandmark_weight > 0:
        penalty = nonlandmark_similarity(queries.vectors, nonlandmarks.vectors, config.nonlandmark_k, config.p)
        candidates["score"] = candidates["score"] - config.nonlandmark_weight * penalty[candidates["query"].to_numpy()]
    max_inliers = failures = None
    if config.verify_top > 0:
        candidates = verify_rerank(candidates, neighbours, sims, queries.items, index.items, pair_inliers,
                                   config.verify_top, config.verify_weight, config.inlier_cap, config.min_inliers)
        max_inliers, failures = candidates.attrs["max_inliers"], candidates.attrs["failures"]
    best = best_per_query(candidates, n)
    if config.reject_below is not None:
        low = best["score"] < config.reject_below
        best.loc[low, "landmark_id"] = ""
    predictions = pd.DataFrame({"id": queries.ids, "landmark_id": best["landmark_id"].to_numpy(),
                                "score": best["score"].to_numpy()})
    return Recognition(predictions, candidates, penalty, max_inliers, failures)


def verification_inliers(cache_dir, max_keypoints: int = 1000, max_side: int = 640) -> PairInliers:
    """A :data:`PairInliers` over :mod:`landmark.retrieval.verification` (RootSIFT + RANSAC).

    Local features are cached on disk under ``cache_dir/index`` and ``cache_dir/queries``
    (:class:`~landmark.retrieval.verification.FeatureCache`), so each image is read once.
    """
    from pathlib import Path

    from .verification import FeatureCache, count_inliers
    queries = FeatureCache(Path(cache_dir) / "queries", max_keypoints, max_side)
    items = FeatureCache(Path(cache_dir) / "index", max_keypoints, max_side)

    def pair_inliers(query_id: str, query_path: str, item_id: str, item_path: str) -> int:
        return count_inliers(queries.get(query_id, query_path), items.get(item_id, item_path))

    return pair_inliers
