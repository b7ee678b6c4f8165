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
