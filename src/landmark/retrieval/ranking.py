"""Stronger global retrieval: learned PCA-whitening, multi-scale descriptors, alpha-QE, DBA and diffusion.

The methods of Radenovic, Tolias, Chum, "Fine-tuning CNN Image Retrieval with No Human
Annotation", TPAMI 2018 (cirtorch), measured on ``../shared/data`` by
``benchmarks/retrieval_quality.py`` (docs/retrieval.md says which one is on by default, and why):

* **PCA-whitening** (:func:`fit_whitening`, :func:`whiten`): ``x -> normalise(diag(l)^-1/2
  V^T (x - mean))`` with the ``dim`` leading eigenvectors ``V`` / eigenvalues ``l`` of the
  descriptors' covariance, fitted without labels on training or index photos (Jegou & Chum,
  ECCV 2012; the unsupervised counterpart of the paper's learned whitening).  FAISS's
  ``PCAMatrix`` (``eigen_power=-0.5``) does the fit and the projection, so an index stores it
  inside ``index.faiss`` (an ``IndexPreTransform``, :mod:`landmark.retrieval.index`) and applies
  the very same matrix to every vector it adds and every query it searches.
* **Multi-scale descriptors** (:func:`multiscale`): the mean of the L2-normalised descriptors
  of one photo at several input sizes (scales 1, 1/sqrt 2, sqrt 2 of the checkpoint's size),
  renormalised (cirtorch ``extract_ms`` with ``msp=1``).
* **alpha-query expansion** (:func:`alpha_query_expansion`): each query is replaced by the
  normalised sum of itself and its ``n`` nearest database vectors, each weighted by its
  similarity to the query raised to ``alpha``, and searched again (Radenovic et al. 2018, sec. 5.2).
* **Database-side augmentation** (:func:`database_augmentation`): the same weighted mean
  applied to every database vector over its own ``n`` nearest database vectors (itself
  included), before queries search them (Arandjelovic & Zisserman, CVPR 2012; alpha-weighted as
  in Radenovic et al. 2018).
* **Diffusion** (:class:`Diffusion`): ranking by a random walk on the database's mutual-kNN graph
  seeded at the query's nearest neighbours (Iscen et al., CVPR 2017), the default of ``landmark
  retrieve`` over alpha-QE + DBA.

Every function takes and returns float32 numpy arrays; nothing here reads files.
"""
from __future__ import annotations

import faiss
import numpy as np

from .config import DIFFUSION_MAX_DENSE, RetrieveConfig

#: ``landmark retrieve``'s diffusion settings (:class:`~landmark.retrieval.config.RetrieveConfig`: their one home)
_RETRIEVE = RetrieveConfig()

#: Input sizes of :func:`multiscale`, as multiples of the checkpoint's size (Radenovic et al. 2018).
SCALES = (1.0, 2 ** -0.5, 2 ** 0.5)
#: Added to every eigenvalue before whitening, as a fraction of the largest: keeps the directions
#: of (nearly) zero variance of a small fitting set from being blown up by ``l^-1/2``.
WHITEN_EPSILON = 1e-3


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` ``[N, D]`` scaled to unit L2 norm, float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_whiten_dim(dim: int, n: int, d: int) -> None:
    """Refuse a whitening of ``dim`` output dimensions that ``n`` fitting vectors of width ``d`` cannot fit.

    Raises:
        ValueError: ``dim`` not in ``1 .. min(d, n - 1)`` (a covariance of ``n`` vectors has rank
            at most ``n - 1``); the message names the largest possible value.
    """
    top = min(d, n - 1)
    if not 1 <= dim <= top:
        raise ValueError(f"whitening to {dim} dimensions needs at least {dim + 1} photos of at least {dim} "
                         f"dimensions ({n} photos of {d}); give a whitening dimension of at most {max(top, 0)}, "
                         f"or 0 for none")


def fit_whitening(vectors: np.ndarray, dim: int, epsilon: float = WHITEN_EPSILON) -> faiss.PCAMatrix:
    """Fit PCA-whitening on ``vectors`` (module docstring).

    Args:
        vectors: float16/32 ``[N, D]`` L2-normalised descriptors (no labels needed).
        dim: output dimensions, ``1 .. min(D, N - 1)``.
        epsilon: added to every eigenvalue, times the largest eigenvalue (:data:`WHITEN_EPSILON`).

    Returns:
        a trained ``faiss.PCAMatrix`` (``D -> dim``); :func:`whiten` applies it.

    Raises:
        ValueError: ``dim`` out of range (:func:`check_whiten_dim`).
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    check_whiten_dim(dim, len(x), x.shape[1])
    pca = faiss.PCAMatrix(x.shape[1], dim, -0.5, False)
    pca.max_points_per_d = max(1000, -(-len(x) // x.shape[1]))   # fit on every vector given
    pca.train(x)
    pca.epsilon = float(epsilon * faiss.vector_to_array(pca.eigenvalues)[0])
    pca.prepare_Ab()   # the projection again, with the regularised eigenvalues
    return pca


def whitening_chain(pca: faiss.PCAMatrix) -> list[faiss.VectorTransform]:
    """The transforms an index applies in order: the whitening, then L2 normalisation."""
    return [pca, faiss.NormalizationTransform(pca.d_out, 2.0)]


def whiten(pca: faiss.PCAMatrix, vectors: np.ndarray) -> np.ndarray:
    """``vectors`` float ``[N, D]`` whitened and L2-normalised: float32 ``[N, dim]``."""
    return normalise(pca.apply(np.ascontiguousarray(vectors, dtype=np.float32)))


def multiscale(scales: list[np.ndarray]) -> np.ndarray:
    """One descriptor per photo from its descriptors at several input sizes.

    Args:
        scales: one float ``[N, D]`` array per scale, rows of the same photos in the same order.

    Returns:
        float32 ``[N, D]``: the normalised mean of the normalised descriptors.

    Raises:
        ValueError: no array, or arrays of different shapes.
    """
    if not scales or any(np.shape(s) != np.shape(scales[0]) for s in scales):
        raise ValueError("give the descriptors of the same photos at each scale (arrays of one shape)")
    return normalise(sum(normalise(s) for s in scales))


def knn(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search (``faiss.knn`` on the CPU).

    Args:
        queries: float ``[Q, D]``; database: float ``[N, D]``.

    Returns:
        (similarities float32 ``[Q, min(k, N)]`` descending, database rows int64 of the same shape).
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    db = np.ascontiguousarray(database, dtype=np.float32)
    return faiss.knn(q, db, min(int(k), len(db)), metric=faiss.METRIC_INNER_PRODUCT)


def _weighted_mean(vectors: np.ndarray, sims: np.ndarray, rows: np.ndarray, database: np.ndarray,
                   alpha: float, include_self: bool) -> np.ndarray:
    """``normalise(self + sum_j max(s_j, 0)^alpha * database[rows_j])`` row by row."""
    weights = np.where(rows >= 0, np.clip(sims, 0.0, None) ** alpha, 0.0).astype(np.float32)   # [Q, n]
    neighbours = np.asarray(database, dtype=np.float32)[np.clip(rows, 0, None)]                 # [Q, n, D]
    total = np.einsum("qn,qnd->qd", weights, neighbours)
    if include_self:
        total = total + np.asarray(vectors, dtype=np.float32)
    return normalise(total)


def alpha_query_expansion(queries: np.ndarray, database: np.ndarray, n: int, alpha: float,
                          sims: np.ndarray | None = None, rows: np.ndarray | None = None) -> np.ndarray:
    """alpha-QE (module docstring): each query plus its ``n`` nearest database vectors weighted by
    ``similarity^alpha``, renormalised.

    Args:
        queries: float ``[Q, D]`` L2-normalised; database: float ``[N, D]`` L2-normalised.
        n: neighbours averaged (0: the queries unchanged).
        alpha: weight exponent (0: plain average query expansion of Chum et al. 2007).
        sims, rows: the queries' first search (``[Q, >=n]``, :func:`knn`) when already done.

    Returns:
        float32 ``[Q, D]`` expanded queries, to search again.
    """
    if n <= 0 or len(database) == 0:
        return normalise(queries)
    if sims is None or rows is None or sims.shape[1] < n:
        sims, rows = knn(queries, database, n)
    return _weighted_mean(queries, sims[:, :n], rows[:, :n], database, alpha=alpha, include_self=True)


def database_augmentation(database: np.ndarray, n: int, alpha: float, chunk: int = 4096) -> np.ndarray:
    """DBA (module docstring): each database vector replaced by the ``similarity^alpha``-weighted
    mean of its ``n`` nearest database vectors, itself (similarity 1) among them.

    Args:
        database: float ``[N, D]`` L2-normalised.
        n: neighbours averaged, itself included (``n <= 1``: unchanged).

    Returns:
        float32 ``[N, D]``; memory ``chunk * n * D`` floats at a time.
    """
    database = normalise(database)
    if n <= 1:
        return database
    out = np.empty_like(database)
    for start in range(0, len(database), chunk):
        part = database[start:start + chunk]
        sims, rows = knn(part, database, n)
        out[start:start + chunk] = _weighted_mean(part, sims, rows, database, alpha=alpha, include_self=False)
    return out


# --- kNN-graph diffusion (Iscen et al., CVPR 2017) ------------------------------------------------

# DIFFUSION_MAX_DENSE (its home: landmark.retrieval.config) is read from this module's namespace


def _diffusion_operator(database: np.ndarray, k: int, gamma: float) -> np.ndarray:
    """``S = D^-1/2 W D^-1/2`` float32 ``[N, N]`` of the mutual ``k``-nearest-neighbour graph of
    L2-normalised ``database`` ``[N, D]`` (edges ``max(s, 0)^gamma``, self excluded)."""
    n = len(database)
    sims, rows = knn(database, database, min(k + 1, n))
    w = np.zeros((n, n), dtype=np.float32)
    r = np.repeat(np.arange(n), rows.shape[1])
    w[r, rows.ravel()] = np.clip(sims.ravel(), 0.0, None) ** gamma
    np.fill_diagonal(w, 0.0)
    w = np.minimum(w, w.T)                                  # mutual neighbours only
    d = w.sum(axis=1)
    inv_sqrt = np.where(d > 0, 1.0 / np.sqrt(np.maximum(d, 1e-12)), 0.0).astype(np.float32)
    return w * inv_sqrt[:, None] * inv_sqrt[None, :]


def _check_diffusion(k: int, alpha: float) -> None:
    if not 0.0 < alpha < 1.0 or k < 1:
        raise ValueError(f"diffusion needs 0 < alpha < 1 and k >= 1 (got alpha={alpha}, k={k})")


def local_diffusion(queries: np.ndarray, candidates: np.ndarray, k: int = _RETRIEVE.diffusion,
                    alpha: float = _RETRIEVE.diffusion_alpha, gamma: float = 3.0,
                    query_k: int = _RETRIEVE.diffusion_seeds) -> np.ndarray:
    """:class:`Diffusion`'s scores on the graph of each query's own candidates: for an index too
    large for a dense inverse, each query's ``M`` nearest photos (found by the index) make a graph
    of their own (mutual ``k`` nearest neighbours among them), seeded and solved as
    :class:`Diffusion` does, ``f = (1 - alpha) (I - alpha S)^-1 y``.  Its cost per query, ``M^2 D``
    for the graph and ``M^3 / 3`` for the solve, does not grow with the index; with every photo
    as a candidate it is :class:`Diffusion` exactly.

    Args:
        queries: float ``[Q, D]`` L2-normalised (after any query expansion).
        candidates: float ``[Q, M, D]`` L2-normalised: each query's ``M`` nearest index photos.
        k, alpha, gamma, query_k: as :class:`Diffusion`.

    Returns:
        float32 ``[Q, M]`` diffusion scores of each query's candidates (larger = more similar).

    Raises:
        ValueError: ``alpha`` outside ``(0, 1)`` or ``k < 1``.
    """
    _check_diffusion(k, alpha)
    queries = normalise(np.asarray(queries, dtype=np.float32))
    out = np.zeros(candidates.shape[:2], dtype=np.float32)
    for i, (q, cand) in enumerate(zip(queries, candidates)):
        cand = normalise(np.asarray(cand, dtype=np.float32))
        m = len(cand)
        s = _diffusion_operator(cand, k, gamma).astype(np.float64)
        sims = cand @ q
        seeds = np.argsort(-sims, kind="stable")[:min(query_k, m)]
        y = np.zeros(m, dtype=np.float64)
        y[seeds] = np.clip(sims[seeds], 0.0, None) ** gamma
        out[i] = (1.0 - alpha) * np.linalg.solve(np.eye(m) - alpha * s, y)
    return out


class Diffusion:
    """Offline diffusion on the index's kNN graph (Iscen, Tolias, Avrithis, Furon, Chum,
    "Efficient Diffusion on Region Manifolds", CVPR 2017; the closed form of Zhou et al. 2004).

    Graph: ``W_ij = max(s_ij, 0)^gamma`` when ``i`` and ``j`` are among each other's ``k`` nearest
    database vectors (mutual neighbours, self excluded), ``S = D^-1/2 W D^-1/2``.  A query's seed
    ``y`` holds ``max(s, 0)^gamma`` on its ``query_k`` nearest database vectors (0 elsewhere); its
    ranking scores are ``f = (1 - alpha) (I - alpha S)^-1 y``, computed with the inverse
    precomputed once for the database (N <= :data:`DIFFUSION_MAX_DENSE`).

    Args:
        database: float ``[N, D]`` L2-normalised.
        k: neighbours per node of the graph.
        alpha: random-walk continuation in ``(0, 1)`` (larger: further along the manifold).
        gamma: similarity exponent of the edges and of the seed.

    Raises:
        ValueError: ``N`` above :data:`DIFFUSION_MAX_DENSE`, ``alpha`` outside ``(0, 1)`` or ``k < 1``.
    """

    def __init__(self, database: np.ndarray, k: int = _RETRIEVE.diffusion, alpha: float = _RETRIEVE.diffusion_alpha,
                 gamma: float = 3.0):
        database = normalise(database)
        n = len(database)
        if n > DIFFUSION_MAX_DENSE:
            raise ValueError(f"diffusion precomputes an {n} x {n} inverse; use it on at most "
                             f"{DIFFUSION_MAX_DENSE} photos (larger: local_diffusion)")
        _check_diffusion(k, alpha)
        self.database, self.alpha, self.gamma = database, float(alpha), float(gamma)
        s = _diffusion_operator(database, k, gamma)
        self.inverse = np.linalg.inv(np.eye(n, dtype=np.float64) - alpha * s.astype(np.float64)).astype(np.float32)
        self.inverse *= 1.0 - alpha

    def scores(self, queries: np.ndarray, query_k: int = _RETRIEVE.diffusion_seeds,
               sims: np.ndarray | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """Diffusion scores float32 ``[Q, N]`` of float ``[Q, D]`` queries (larger = more similar).

        ``sims``/``rows``: the queries' first search (``[Q, >= query_k]``) when already done.
        """
        if sims is None or rows is None or sims.shape[1] < query_k:
            sims, rows = knn(queries, self.database, query_k)
        sims, rows = sims[:, :query_k], rows[:, :query_k]
        y = np.zeros((len(sims), len(self.database)), dtype=np.float32)
        qi = np.repeat(np.arange(len(sims)), sims.shape[1])
        ok = rows.ravel() >= 0
        y[qi[ok], rows.ravel()[ok]] = np.clip(sims.ravel()[ok], 0.0, None) ** self.gamma
        return y @ self.inverse.T

    def rank(self, queries: np.ndarray, top_k: int, query_k: int = _RETRIEVE.diffusion_seeds) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 ``[Q, top_k]`` descending, database rows int64 ``[Q, top_k]``)."""
        f = self.scores(queries, query_k)
        top_k = min(top_k, f.shape[1])
        rows = np.argpartition(-f, top_k - 1, axis=1)[:, :top_k]
        order = np.argsort(-np.take_along_axis(f, rows, axis=1), axis=1, kind="stable")
        rows = np.take_along_axis(rows, order, axis=1)
        return np.take_along_axis(f, rows, axis=1), rows.astype(np.int64)
