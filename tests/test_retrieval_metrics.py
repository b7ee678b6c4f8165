"""Retrieval metrics on hand-computed cases (GLDv2 mAP@100, Revisited Oxford/Paris)."""
import pickle

import numpy as np
import pytest

from landmark.evaluation.retrieval_metrics import (average_precision_trapezoid, compute_map, mean_average_precision,
                                                   read_revisited_gnd, revisited_map)


def test_gldv2_map_hand_computed():
    solution = {"q1": ["a", "b"], "q2": ["c"], "q3": ["d"]}
    predictions = {"q1": ["a", "x", "b"], "q2": ["x", "c"]}  # q3 predicts nothing: AP 0
    # q1: (1/1 + 2/3) / 2 = 5/6; q2: (1/2) / 1; mean over all 3 solution queries
    assert mean_average_precision(predictions, solution) == pytest.approx((5 / 6 + 0.5 + 0.0) / 3)


def test_gldv2_map_duplicates_and_cutoff():
    solution = {"q1": ["a", "b"]}
    # the repeated "a" scores nothing but keeps its position, so "b" is at rank 3: (1 + 2/3) / 2
    assert mean_average_precision({"q1": ["a", "a", "b"]}, solution) == pytest.approx(5 / 6)
    # only the first 2 predictions count: 1/1 / min(2 relevant, 2)
    assert mean_average_precision({"q1": ["a", "x", "b"]}, solution, max_predictions=2) == pytest.approx(0.5)
    # many relevant images: the divisor is min(n_relevant, K)
    many = {"q": [f"r{i}" for i in range(5)]}
    assert mean_average_precision({"q": ["r0", "r1"]}, many, max_predictions=2) == pytest.approx(1.0)


def test_gldv2_map_rejects_unknown_query():
    with pytest.raises(ValueError, match="not part"):
        mean_average_precision({"zz": ["a"]}, {"q1": ["a"]})


def test_trapezoid_ap_hand_computed():
    # positives at 0-based ranks 0 and 2 of 2: (1 + 1)/2/2 + (1/2 + 2/3)/2/2
    assert average_precision_trapezoid(np.array([0, 2]), 2) == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)
    # one of two positives never retrieved
    assert average_precision_trapezoid(np.array([1]), 2) == pytest.approx((0 + 0.5) / 2 / 2)


def test_compute_map_ignores_junk():
    # database order for the single query: positive, junk, other, positive
    ranks = np.array([[10], [11], [12], [13]])
    gnd = [{"ok": [10, 13], "junk": [11]}]
    mean_ap, aps, mpr, prs = compute_map(ranks, gnd, kappas=(1, 3))
    assert mean_ap == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)  # junk removed: ranks 0 and 2
    assert aps[0] == pytest.approx(mean_ap)
    # P@1 = 1; P@3 over 1-based ranks [1, 3] cut at min(3, 3): 2/3
    assert mpr == pytest.approx([1.0, 2 / 3])


def test_revisited_easy_medium_hard():
    ranks = np.arange(5)[:, None].repeat(2, axis=1)  # both queries rank the database 0..4
    gnd = [{"easy": [0], "hard": [3], "junk": [1], "bbx": [0, 0, 1, 1]},
           {"easy": [2], "hard": [], "junk": []}]
    out = revisited_map(ranks, gnd, kappas=(1, 5))
    # query 0 -- easy: ok [0], junk [1, 3] -> AP 1; query 1 -- ok [2] at rank 2: (2/2 * ... ) (0/2 + 1/3)/2
    assert out["easy"]["map"] == pytest.approx((1.0 + (0 + 1 / 3) / 2) / 2)
    # medium: query 0 ok [0, 3], junk [1] -> ranks [0, 2]; query 1 as in easy
    assert out["medium"]["map"] == pytest.approx(((0.5 + (0.5 + 2 / 3) / 4) + (1 / 3) / 2) / 2)
    # hard: query 0 ok [3], junk [1, 0] -> rank 1: (0/1 + 1/2)/2; query 1 has no hard image -> left out
    assert out["hard"]["map"] == pytest.approx(0.25)
    # medium mP@1: query 0 has a positive at rank 1 (1.0), query 1 at rank 3 (cut min(3,1)=1 -> 0)
    assert out["medium"]["mp@k"][1] == pytest.approx(0.5)
    assert out["medium"]["mp@k"][5] == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_read_revisited_gnd(tmp_path):
    good = {"imlist": ["a", "b"], "qimlist": ["q"], "gnd": [{"easy": [0], "hard": [], "junk": [1], "bbx": None}]}
    path = tmp_path / "gnd_test.pkl"
    path.write_bytes(pickle.dumps(good))
    assert read_revisited_gnd(path)["gnd"][0]["junk"] == [1]
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"imlist": [], "qimlist": ["q"], "gnd": [{"easy": []}]}))
    with pytest.raises(ValueError, match="lacks"):
        read_revisited_gnd(bad)
    with pytest.raises(FileNotFoundError):
        read_revisited_gnd(tmp_path / "missing.pkl")
