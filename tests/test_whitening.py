"""Learned PCA-whitening (retrieval/ranking.py) stored in an index: fitted on the indexed vectors,
applied identically to enrolled photos and queries, identical after reloading; alpha-QE and DBA
on hand-checkable cases."""
import numpy as np
import pandas as pd
import pytest

from landmark.retrieval.config import IndexParams, RetrieveConfig
from landmark.retrieval.embeddings import Embeddings
from landmark.retrieval.index import LandmarkIndex
from landmark.retrieval.pipeline import rank_index
from landmark.retrieval.ranking import (Diffusion, alpha_query_expansion, database_augmentation, fit_whitening, multiscale,
                                        normalise, whiten)


def _vectors(n=240, d=48, seed=0):
    rng = np.random.default_rng(seed)
    # a strong shared direction (as ImageNet features share one), 6 landmarks, noise
    centres = rng.normal(size=(6, d))
    x = 4 * np.ones(d) + centres[np.arange(n) % 6] + 0.8 * rng.normal(size=(n, d))
    return normalise(x).astype(np.float16), (np.arange(n) % 6).astype(str)


def _embeddings(x, labels, first=0):
    return Embeddings(x, pd.DataFrame({"id": [f"p{first + i}" for i in range(len(x))], "landmark_id": labels}))


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_whitening_is_stored_with_the_index_and_applied_alike(tmp_path, kind):
    x, labels = _vectors()
    index = LandmarkIndex.build(_embeddings(x[:200], labels[:200]), IndexParams(kind=kind, whiten=16, nlist=4))
    # the same matrix as fitting on the same vectors by hand
    by_hand = whiten(fit_whitening(x[:200], 16), x)
    assert np.allclose(index.transform(x), by_hand, atol=1e-5)
    assert np.allclose(index.stored(np.arange(200)), by_hand[:200], atol=1e-5)
    # a query searched through the index = the whitened query against the whitened photos
    sims, rows = index.search(x[200:], 5)
    expect = np.sort(by_hand[200:] @ by_hand[:200].T, axis=1)[:, ::-1][:, :5]
    assert np.allclose(sims, expect, atol=1e-4)
    # enrolment whitens the new photos with the stored matrix, not a new fit
    assert index.add(_embeddings(x[200:], labels[200:], first=200))[0] == 40
    assert np.allclose(index.stored(np.arange(200, 240)), by_hand[200:], atol=1e-5)
    index.save(tmp_path / "idx")
    again = LandmarkIndex.load(tmp_path / "idx")
    assert again.params.whiten == 16 and again.dim == 48 and len(again) == 240
    assert np.array_equal(again.transform(x), index.transform(x))
    assert np.array_equal(again.stored(np.arange(240)), index.stored(np.arange(240)))
    assert np.array_equal(again.search(x[:7], 9)[1], index.search(x[:7], 9)[1])


def test_whitening_separates_landmarks_better_than_raw_cosine():
    # a nuisance of large variance in 3 directions (lighting, season...) drowns the landmarks in raw cosine
    rng = np.random.default_rng(1)
    n, d = 240, 48
    centres, nuisance = rng.normal(size=(6, d)), rng.normal(size=(3, d))
    x = normalise(4 * np.ones(d) + centres[np.arange(n) % 6] + 3 * rng.normal(size=(n, 3)) @ nuisance
                  + 0.3 * rng.normal(size=(n, d))).astype(np.float16)
    labels = (np.arange(n) % 6).astype(str)
    raw = LandmarkIndex.build(_embeddings(x, labels), IndexParams(kind="flat"))
    white = LandmarkIndex.build(_embeddings(x, labels), IndexParams(kind="flat", whiten=16))
    hits = {name: np.mean(labels[idx.search(x, 6)[1][:, 1:]] == labels[:, None]) for name, idx in
            (("raw", raw), ("white", white))}
    assert hits["raw"] < 0.4 and hits["white"] > 0.9   # measured 0.29 and 0.98


def test_whitening_needs_more_photos_than_dimensions():
    x, labels = _vectors(n=10)
    with pytest.raises(ValueError, match="at most 9"):
        LandmarkIndex.build(_embeddings(x, labels), IndexParams(kind="flat", whiten=16))


def test_alpha_qe_dba_and_multiscale_by_hand():
    db = normalise(np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1]], dtype=np.float32))
    q = normalise(np.array([[1, 0.1, 0]], dtype=np.float32))
    s = db @ q[0]
    expected = normalise(q + (s[0] ** 3) * db[0] + (s[1] ** 3) * db[1])   # 2 nearest: rows 0 and 1
    assert np.allclose(alpha_query_expansion(q, db, 2, 3.0), expected, atol=1e-6)
    assert np.allclose(alpha_query_expansion(q, db, 0, 3.0), q)
    dba = database_augmentation(db, 2, 3.0)
    assert np.allclose(dba[2], normalise(db[2:3] + (db[2] @ db[0]) ** 0 * 0 * db[0])[0], atol=1e-6)  # its own 1
    assert np.allclose(dba[0], normalise((1.0 * db[0] + 0.8 ** 3 * db[1])[None])[0], atol=1e-6)
    assert np.allclose(multiscale([db, db * 2]), db, atol=1e-6)


def test_rank_index_with_alpha_qe_on_a_whitened_index():
    x, labels = _vectors(seed=2)
    index = LandmarkIndex.build(_embeddings(x, labels), IndexParams(kind="flat", whiten=16))
    sims, rows = rank_index(index, x[:4].astype(np.float32), RetrieveConfig(top_k=300, qe=3, dba=0, diffusion=0))
    assert rows.shape == (4, 300) and (rows[:, 240:] == -1).all() and np.isinf(sims[:, 240:]).all()
    w = index.transform(x)
    ranks = index.search(x[:4], 3)
    expanded = alpha_query_expansion(w[:4], w, 3, 3.0, *ranks)
    assert np.array_equal(rows[:, :240], np.argsort(-(expanded @ w.T), axis=1, kind="stable")[:, :240]) or \
        np.allclose(np.take_along_axis(expanded @ w.T, rows[:, :240], 1), sims[:, :240], atol=1e-5)
    # DBA 5 (recomputed from the index's whitened vectors at search time), then alpha-QE over the augmented ones
    sims, rows = rank_index(index, x[:4].astype(np.float32), RetrieveConfig(top_k=10, qe=3, dba=5, diffusion=0))
    aug = database_augmentation(w, 5, 3.0)
    expanded = alpha_query_expansion(w[:4], aug, 3, 3.0)
    assert np.allclose(sims, np.sort(expanded @ aug.T, axis=1)[:, ::-1][:, :10], atol=1e-5)
    assert np.allclose(np.take_along_axis(expanded @ aug.T, rows, 1), sims, atol=1e-5)
    # the default adds diffusion (k 30, alpha 0.95) over the augmented vectors, scores divided by the best
    sims, rows = rank_index(index, x[:4].astype(np.float32), RetrieveConfig(top_k=10, qe=3))
    f = Diffusion(aug, k=30, alpha=0.95).scores(expanded, query_k=10)
    assert np.array_equal(rows, np.argsort(-f, axis=1, kind="stable")[:, :10])
    assert np.allclose(sims, np.take_along_axis(f, rows, 1) / f.max(axis=1, keepdims=True), atol=1e-5)
