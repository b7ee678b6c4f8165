"""kNN-graph diffusion (landmark.retrieval.ranking.Diffusion) on hand-made vectors with known answers."""
import numpy as np
import pytest

from landmark.retrieval.ranking import Diffusion, normalise


def _unit(deg):
    r = np.deg2rad(deg)
    return np.array([np.cos(r), np.sin(r), 0.0], dtype=np.float32)


def test_diffusion_equals_the_closed_form_by_hand():
    # 4 photos on a circle at 0, 20, 40, 90 degrees, k=2: edges 0-20, 0-40, 20-40 (mutual); 90 has none
    db = np.stack([_unit(0), _unit(20), _unit(40), _unit(90)])
    g = Diffusion(db, k=2, alpha=0.5, gamma=1.0)
    s = np.clip(db @ db.T, 0, None)
    # 2 nearest others: 0->{20,40}, 20->{0,40}, 40->{20,0 or 90: cos40=0.766 > cos50=0.643 -> 0}, 90->{40,20}
    nn = {0: {1, 2}, 1: {0, 2}, 2: {1, 0}, 3: {2, 1}}
    w = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            if i != j and j in nn[i] and i in nn[j]:
                w[i, j] = s[i, j]
    d = w.sum(1)
    with np.errstate(invalid="ignore"):
        S = np.nan_to_num(w / np.sqrt(np.outer(d, d)))   # photo 90: no edge, its row stays 0
    expected_inverse = 0.5 * np.linalg.inv(np.eye(4) - 0.5 * S)
    assert np.allclose(g.inverse, expected_inverse, atol=1e-5)
    q = _unit(5)[None]
    y = np.zeros(4)
    y[[0, 1]] = [np.cos(np.deg2rad(5)), np.cos(np.deg2rad(15))]   # query_k=2 seeds, gamma 1
    assert np.allclose(g.scores(q, query_k=2)[0], expected_inverse @ y, atol=1e-5)
    assert g.scores(q, query_k=2)[0, 3] == pytest.approx(0.0)   # photo 90 has no mutual neighbour


def test_diffusion_follows_the_manifold_past_a_closer_distractor():
    # a chain of photos of one building (0, 15, 30, 45, 60 degrees in the x-y plane) and a distractor out of
    # the plane, more similar to the query than the chain's far end by cosine, linked to nothing
    chain = [_unit(a) for a in (0, 15, 30, 45, 60)]
    distractor = normalise(np.array([[0.6, 0.0, 0.8]], dtype=np.float32))[0]   # cosine 0.6 with the query
    db = np.stack(chain + [distractor])
    q = _unit(0)[None]
    cosine_order = list(np.argsort(-(db @ q[0])))
    assert cosine_order.index(5) < cosine_order.index(4)           # cosine: distractor before the far end (60 deg)
    _, rows = Diffusion(db, k=2, alpha=0.9, gamma=3.0).rank(q, 6, query_k=2)
    assert set(rows[0][:5]) == {0, 1, 2, 3, 4} and rows[0][5] == 5   # diffusion: the whole chain first


def test_diffusion_refuses_bad_settings():
    db = normalise(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="alpha"):
        Diffusion(db, alpha=1.0)


def test_local_diffusion_on_every_photo_is_the_dense_diffusion():
    """With all N photos as each query's candidates (in any order), the per-query graph is the whole
    kNN graph: local_diffusion's scores are Diffusion's."""
    from landmark.retrieval.ranking import local_diffusion
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    db = normalise((centres[rng.integers(0, 6, 120)] + 0.5 * rng.normal(size=(120, 16))).astype(np.float32))
    q = normalise((centres[:3] + 0.5 * rng.normal(size=(3, 16))).astype(np.float32))
    dense = Diffusion(db, k=8, alpha=0.9).scores(q, query_k=5)
    order = np.stack([rng.permutation(120) for _ in range(3)])   # each query's candidates, shuffled
    local = local_diffusion(q, db[order], k=8, alpha=0.9, query_k=5)
    np.testing.assert_allclose(local, np.take_along_axis(dense, order, 1), rtol=1e-4, atol=1e-6)
    # fewer candidates: the query's 40 nearest; their best still leads, and the scores differ from the dense ones
    near = np.argsort(-(q @ db.T), axis=1)[:, :40]
    part = local_diffusion(q, db[near], k=8, alpha=0.9, query_k=5)
    assert part.shape == (3, 40) and (part.argmax(1) < 10).all()
    with pytest.raises(ValueError, match="alpha"):
        local_diffusion(q, db[order], alpha=0.0)


def test_an_index_too_large_for_the_dense_inverse_is_diffused_per_query(monkeypatch):
    """Above DIFFUSION_MAX_DENSE photos rank_index diffuses each query on its candidates' graph (it
    used to skip diffusion with a warning); with every photo a candidate the ranking is the dense one."""
    import landmark.retrieval.ranking as ranking
    from landmark.retrieval.config import IndexParams, RetrieveConfig
    from landmark.retrieval.embeddings import Embeddings
    from landmark.retrieval.index import LandmarkIndex
    from landmark.retrieval.pipeline import rank_index
    import pandas as pd
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 16))
    labels = rng.integers(0, 5, 200)
    x = normalise((centres[labels] + 0.6 * rng.normal(size=(200, 16))).astype(np.float32))
    items = pd.DataFrame({"id": [f"p{i}" for i in range(200)], "landmark_id": labels.astype(str),
                          "path": [f"p{i}.jpg" for i in range(200)]})
    index = LandmarkIndex.build(Embeddings(items=items, vectors=x), IndexParams(kind="flat"))
    config = RetrieveConfig(top_k=20, qe=3, dba=0, diffusion=10, diffusion_candidates=200)
    dense = rank_index(index, x[:5], config)
    monkeypatch.setattr(ranking, "DIFFUSION_MAX_DENSE", 100)
    local = rank_index(index, x[:5], config)
    np.testing.assert_array_equal(local[1], dense[1])
    np.testing.assert_allclose(local[0], dense[0], rtol=1e-4)
    few = rank_index(index, x[:5], config.model_copy(update={"diffusion_candidates": 50}))
    assert few[1].shape == (5, 20) and (few[0][:, 0] == 1.0).all()


def test_diffusion_is_left_out_when_landmarks_have_few_photos_in_the_index():
    """An index whose landmarks have fewer than diffusion_min_photos photos (median) is ranked by
    QE + DBA alone: its 30-neighbour graph would be mostly other landmarks' photos (a new user's
    24-photo index of 4 landmarks got 20 of 36 right top-3 answers with diffusion, 30 without)."""
    import pandas as pd

    from landmark.retrieval.config import IndexParams, RetrieveConfig
    from landmark.retrieval.embeddings import Embeddings
    from landmark.retrieval.index import LandmarkIndex
    from landmark.retrieval.pipeline import photos_per_landmark, rank_index
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(4, 16))
    labels = np.repeat(np.arange(4), 6)
    x = normalise((centres[labels] + 0.7 * rng.normal(size=(24, 16))).astype(np.float32))
    items = pd.DataFrame({"id": [f"p{i}" for i in range(24)], "landmark_id": labels.astype(str)})
    index = LandmarkIndex.build(Embeddings(items=items, vectors=x), IndexParams(kind="flat"))
    assert photos_per_landmark(index) == 6
    default, plain = RetrieveConfig(top_k=10), RetrieveConfig(top_k=10, diffusion=0)
    np.testing.assert_array_equal(rank_index(index, x[:3], default)[1], rank_index(index, x[:3], plain)[1])
    anyway = rank_index(index, x[:3], default.model_copy(update={"diffusion_min_photos": 0}))[1]
    assert not np.array_equal(anyway, rank_index(index, x[:3], plain)[1])   # diffusion does change this ranking


def _clustered_index(n=300, seed=1):
    from landmark.retrieval.config import IndexParams
    from landmark.retrieval.embeddings import Embeddings
    from landmark.retrieval.index import LandmarkIndex
    import pandas as pd
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 16))
    x = normalise((centres[rng.integers(0, 5, n)] + 0.6 * rng.normal(size=(n, 16))).astype(np.float32))
    items = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "landmark_id": "a",
                          "path": [f"p{i}.jpg" for i in range(n)]})
    return LandmarkIndex.build(Embeddings(items=items, vectors=x), IndexParams(kind="flat")), x


def test_an_index_above_max_augmented_is_still_diffused():
    """retrieve.max_augmented below the index's size (and the index under DIFFUSION_MAX_DENSE): the
    dense graph is not built, so each query is diffused on its candidates; it was silently not
    diffused at all (the rows of plain search, no warning since 26f70d5)."""
    from landmark.retrieval.config import RetrieveConfig
    from landmark.retrieval.pipeline import rank_index
    index, x = _clustered_index()
    asked = RetrieveConfig(top_k=20, qe=3, dba=0, diffusion=10, diffusion_candidates=300)
    dense = rank_index(index, x[:5], asked)                                     # 300 <= max_augmented
    capped = rank_index(index, x[:5], asked.model_copy(update={"max_augmented": 100}))
    plain = rank_index(index, x[:5], asked.model_copy(update={"diffusion": 0}))
    assert not np.array_equal(dense[1], plain[1])
    np.testing.assert_array_equal(capped[1], dense[1])
    np.testing.assert_allclose(capped[0], dense[0], rtol=1e-4)


def test_fewer_diffusion_candidates_than_top_k_still_rank_top_k_photos(monkeypatch):
    """diffusion_candidates 10 below top_k 50 on an index of 300 (per-query diffusion): 50 photos
    per query, the 10 diffused first, then the next 40 by cosine (diffusion score 0, as a photo the
    graph does not reach); it gave 10 photos and 40 rows of -1, as if the index held 10."""
    import landmark.retrieval.ranking as ranking
    from landmark.retrieval.config import RetrieveConfig
    from landmark.retrieval.pipeline import rank_index
    index, x = _clustered_index()
    monkeypatch.setattr(ranking, "DIFFUSION_MAX_DENSE", 100)
    sims, rows = rank_index(index, x[:4], RetrieveConfig(top_k=50, qe=0, dba=0, diffusion=5, diffusion_candidates=10))
    cosine = np.argsort(-(x[:4] @ x.T), axis=1, kind="stable")
    assert (rows >= 0).all() and np.isfinite(sims).all()
    for i in range(4):
        assert set(rows[i, :10]) == set(cosine[i, :10])
        np.testing.assert_array_equal(rows[i, 10:], cosine[i, 10:50])
        assert (sims[i, 10:] == 0).all() and (sims[i, :10] >= 0).all()


def test_diffusion_candidates_past_the_dense_limit_are_refused():
    """retrieve.diffusion_candidates is each query's dense graph (M x M, solved in float64): above
    DIFFUSION_MAX_DENSE it is refused when the settings are read (100,000 asked for ~300 GB per
    query on a large index), in one line naming the limit."""
    from pydantic import ValidationError

    from landmark.retrieval.config import RetrieveConfig
    from landmark.retrieval.ranking import DIFFUSION_MAX_DENSE
    assert RetrieveConfig(diffusion_candidates=DIFFUSION_MAX_DENSE).diffusion_candidates == DIFFUSION_MAX_DENSE
    with pytest.raises(ValidationError, match=f"at most {DIFFUSION_MAX_DENSE}"):
        RetrieveConfig(diffusion_candidates=100_000)
