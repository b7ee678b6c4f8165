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
4. Geometric verification re-ranking (:func:`verify_rerank`, settings
   :class:`~landmark.retrieval.config.VerifyConfig`), a separate step given a
   ``pair_inliers`` callable: the best candidate is re-chosen with a bonus for RANSAC
   inliers, and queries that no candidate matches are ranked last.

Every default lives in :mod:`landmark.retrieval.config`.

The prediction of a query is its best landmark and that score (one per query, as GAP wants).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from tqdm import tqdm

from ..data import ImageError
from .config import KnnConfig, VerifyConfig
from .embeddings import Embeddings, iter_chunks
from .index import LandmarkIndex
from .scoring import REFERENCE_POWER, REFERENCE_TOP, reference_score  # noqa: F401 (re-exported)

#: ``pair_inliers(query_id, query_path, item_id, item_path) -> RANSAC inliers``.
PairInliers = Callable[[str, str, str, str], int]

#: The defaults of every function below (one place: :class:`~landmark.retrieval.config.KnnConfig`).
_KNN = KnnConfig()


def knn_vote(sims: np.ndarray, labels: np.ndarray, p: float = _KNN.p) -> pd.DataFrame:
    """Similarity-weighted kNN vote: each query's neighbours vote for their landmarks.

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
        candidates: :func:`knn_vote` output (``query, landmark_id, knn``).
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


#: ``prob * s_ref ** 3``: one home, :func:`landmark.retrieval.scoring.reference_score` (kept here
#: under its old name for callers of this module).
reference_confidence = reference_score


def nonlandmark_similarity(queries: np.ndarray, nonlandmarks: np.ndarray, k: int = _KNN.nonlandmark_k,
                           p: float = _KNN.p, chunk: int = 4096) -> np.ndarray:
    """``1/k' * sum max(s, 0) ** p`` over each query's ``k'`` most similar non-landmark photos.

    Args:
        queries: ``[Q, D]`` L2-normalised.
        nonlandmarks: ``[R, D]`` L2-normalised reference photos without landmarks.

    Returns:
        float64 ``[Q]`` in [0, 1], on the same scale as :func:`knn_vote`'s ``knn``.

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


def verify_rerank(candidates: pd.DataFrame, neighbours: np.ndarray, sims: np.ndarray, *,
                  query_items: pd.DataFrame, index_items: pd.DataFrame, pair_inliers: PairInliers,
                  config: VerifyConfig) -> pd.DataFrame:
    """Re-rank candidates by geometric verification of each query's top neighbours.

    For query ``q`` the first ``config.top`` neighbours (by global similarity) are
    verified; landmark ``l`` gets ``score += weight * min(m_l, inlier_cap) / inlier_cap``
    where ``m_l`` is the most inliers of a verified photo of ``l``.  A query none of whose
    verified photos reaches ``config.min_inliers`` gets ``score -= 10`` (ranked after every
    matched query, keeping its order among the unmatched).  A pair whose inliers cannot
    be computed (unreadable image: ``pair_inliers`` raises ``ImageError``/``OSError``/
    ``ValueError``) counts 0 inliers and is listed in the returned ``failures`` column.

    Args:
        candidates: ``query, landmark_id, score`` (+ other columns, kept).
        neighbours: int ``[Q, k]`` rows of ``index_items`` (-1: none), by similarity.
        sims: float ``[Q, k]`` their similarities (used only to skip empty slots).
        query_items / index_items: ``id`` and ``path`` of queries / indexed photos.
        pair_inliers: ``(query_id, query_path, item_id, item_path) -> int``.
        config: ``top`` (neighbours verified per query), ``weight``, ``inlier_cap``, ``min_inliers``.

    Returns:
        candidates with ``inliers`` (best per landmark, 0 if unverified) and the new
        ``score``, plus landmarks found only among verified neighbours; ``attrs['max_inliers']``
        is float ``[Q]`` and ``attrs['failures']`` a list of ``(query_id, item_id, reason)``.
    """
    verified, max_inliers, failures = _verify_neighbours(neighbours[:, :config.top], sims[:, :config.top],
                                                         query_items, index_items, pair_inliers=pair_inliers)
    out = candidates.drop(columns=["inliers"], errors="ignore").merge(verified, on=["query", "landmark_id"],
                                                                      how="outer")
    out["inliers"] = out["inliers"].fillna(0).astype(int)
    for col in ("knn", "prob"):
        if col in out:
            out[col] = out[col].fillna(0.0)
    cap = config.inlier_cap
    out["score"] = out["score"].fillna(0.0) + config.weight * np.minimum(out["inliers"], cap) / cap
    unmatched = max_inliers[out["query"].to_numpy()] < config.min_inliers
    out.loc[unmatched, "score"] -= 10.0
    out.attrs["max_inliers"] = max_inliers
    out.attrs["failures"] = failures
    return out


def _verify_neighbours(neighbours: np.ndarray, sims: np.ndarray, query_items: pd.DataFrame,
                       index_items: pd.DataFrame, pair_inliers: PairInliers) -> tuple[pd.DataFrame, np.ndarray, list]:
    """Inliers of every (query, neighbour) pair: (best per ``query, landmark_id`` as column
    ``inliers``; float ``[Q]`` best per query; ``(query_id, item_id, reason)`` failures)."""
    q_ids, q_paths = (query_items[c].astype(str).to_numpy() for c in ("id", "path"))
    i_ids, i_paths, i_labels = (index_items[c].astype(str).to_numpy() for c in ("id", "path", "landmark_id"))
    rows, failures = [], []
    max_inliers = np.zeros(len(q_ids))
    for q in tqdm(range(len(q_ids)), desc=f"verify top-{neighbours.shape[1]}", unit="query", dynamic_ncols=True):
        for j, s in zip(neighbours[q], sims[q]):
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
    return verified.groupby(["query", "landmark_id"], as_index=False)["inliers"].max(), max_inliers, failures


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
              nonlandmarks: Embeddings | None = None, *, verify: VerifyConfig | None = None,
              pair_inliers: PairInliers | None = None) -> Recognition:
    """Predict one landmark per query by kNN voting (module docstring, steps 1-4).

    Args:
        index: labelled photos.
        queries: query embeddings ``[Q, D]``; ``queries.classes`` is needed when
            ``config.classifier_weight > 0``; ``queries.items['path']`` for verification.
        config: voting settings (default :class:`~landmark.retrieval.config.KnnConfig`).
        nonlandmarks: reference photos without landmarks for the penalty (None: no penalty).
        verify: verification re-ranking settings; ``verify.top > 0`` re-ranks (default: off).
        pair_inliers: geometric verification callable (:func:`verification_inliers`).

    Returns:
        :class:`Recognition` (predictions: Q rows ``id, landmark_id, score``).

    Raises:
        ValueError: dimension mismatch, classifier weight without stored classifier
            scores, or ``verify.top > 0`` without ``pair_inliers``.
    """
    config, verify = config or KnnConfig(), verify or VerifyConfig()
    _check_queries(index, queries, config, verify, pair_inliers=pair_inliers)
    sims, neighbours = index.search(queries.vectors, max(config.k, verify.top))
    labels = np.where(neighbours >= 0, index.labels[np.clip(neighbours, 0, None)], "")
    candidates = knn_vote(sims[:, :config.k], labels[:, :config.k], config.p)
    if config.classifier_weight > 0:
        candidates = add_classifier(candidates, queries.classes[0], queries.classes[1], config.classifier_weight)
    else:
        candidates = candidates.assign(score=candidates["knn"])
    penalty = None
    if nonlandmarks is not None and config.nonlandmark_weight > 0:
        penalty = nonlandmark_similarity(queries.vectors, nonlandmarks.vectors, config.nonlandmark_k, config.p)
        candidates["score"] = candidates["score"] - config.nonlandmark_weight * penalty[candidates["query"].to_numpy()]
    max_inliers = failures = None
    if verify.top > 0:
        candidates = verify_rerank(candidates, neighbours, sims, query_items=queries.items, index_items=index.items,
                                   pair_inliers=pair_inliers, config=verify)
        max_inliers, failures = candidates.attrs["max_inliers"], candidates.attrs["failures"]
    best = best_per_query(candidates, len(queries))
    if config.reject_below is not None:
        best.loc[best["score"] < config.reject_below, "landmark_id"] = ""
    predictions = pd.DataFrame({"id": queries.ids, "landmark_id": best["landmark_id"].to_numpy(),
                                "score": best["score"].to_numpy()})
    return Recognition(predictions, candidates, penalty, max_inliers, failures=failures)


def _check_queries(index: LandmarkIndex, queries: Embeddings, config: KnnConfig, verify: VerifyConfig,
                   pair_inliers: PairInliers | None) -> None:
    """The ValueErrors of :func:`recognise`, before any search."""
    if queries.vectors.shape[1] != index.dim:
        raise ValueError(f"queries have dimension {queries.vectors.shape[1]}, the index {index.dim} "
                         "(embed them with the index's checkpoint)")
    if config.classifier_weight > 0 and queries.classes is None:
        raise ValueError("classifier_weight > 0 needs classifier scores (embed the queries with top classes)")
    if verify.top > 0 and pair_inliers is None:
        raise ValueError("verify.top > 0 needs a pair_inliers callable (geometric verification)")


def verification_inliers(cache_dir: str | Path, config: VerifyConfig | None = None) -> PairInliers:
    """A :data:`PairInliers` over :mod:`landmark.retrieval.verification` (RootSIFT + RANSAC).

    Local features (``config.max_keypoints``, ``config.max_side``) are cached on disk under
    ``cache_dir/index`` and ``cache_dir/queries``
    (:class:`~landmark.retrieval.verification.FeatureCache`), so each image is read once;
    pairs are matched with ``config.ratio``, ``config.model`` and ``config.ransac_threshold``.
    """
    from .verification import FeatureCache, count_inliers
    config = config or VerifyConfig()
    queries = FeatureCache(Path(cache_dir) / "queries", config.max_keypoints, config.max_side)
    items = FeatureCache(Path(cache_dir) / "index", config.max_keypoints, config.max_side)

    def pair_inliers(query_id: str, query_path: str, item_id: str, item_path: str) -> int:
        return count_inliers(queries.get(query_id, query_path), items.get(item_id, item_path), ratio=config.ratio,
                             ransac_threshold=config.ransac_threshold, model=config.model)

    return pair_inliers
