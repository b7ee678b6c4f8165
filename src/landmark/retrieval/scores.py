"""Reference scoring in numpy alone: a classifier answer confirmed by the indexed photos.

:func:`reference_confidence` is the score ``predict``, ``recognize``, the service and
``landmark train``'s thresholds use with a run's reference index (``prob * s_ref^3``).
It imports numpy only, so the torch-free recogniser (:mod:`landmark.inference.instant`)
scores exactly as the PyTorch path does; :mod:`landmark.retrieval.knn` re-exports it.
"""
from __future__ import annotations

import numpy as np

#: neighbours searched per query for :func:`reference_confidence`
REFERENCE_K = 50
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
