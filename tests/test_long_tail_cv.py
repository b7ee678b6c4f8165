"""The long-tail options of the 52-class cross-validation (benchmarks/quality_many_cv.py)."""
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality_many_cv as cv  # noqa: E402


def test_knn_votes_hand_computed():
    sims = np.array([[0.9, 0.5, -0.2], [0.1, 0.8, 0.4]])
    neighbours = np.array([["a", "b", "a"], ["b", "b", "a"]])
    votes = cv.knn_votes(sims, neighbours, ["a", "b"], k=3, power=1.0)
    np.testing.assert_allclose(votes, [[0.9 / 3, 0.5 / 3], [0.4 / 3, 0.9 / 3]])


@pytest.mark.slow   # three L-BFGS fits: 18 s measured at a load average of ~20 on 2 cores
def test_logit_adjusted_loss_learns_the_balanced_posterior():
    # features carry no information: the plain fit learns the prior, the logit-adjusted one
    # (Menon et al. 2021) the uniform, class-balanced posterior
    x = torch.zeros(100, 4)
    y = torch.tensor([0] * 80 + [1] * 20)
    _, b = cv.fit(x, y, 2, label_smoothing=0.0, balance=0.0, la_tau=0.0)
    np.testing.assert_allclose(b.softmax(0).numpy(), [0.8, 0.2], atol=1e-3)
    _, b = cv.fit(x, y, 2, label_smoothing=0.0, la_tau=1.0)
    np.testing.assert_allclose(b.softmax(0).numpy(), [0.5, 0.5], atol=1e-3)
    _, b = cv.fit(x, y, 2, label_smoothing=0.0, balance=1.0)   # inverse-frequency weights: the same
    np.testing.assert_allclose(b.softmax(0).numpy(), [0.5, 0.5], atol=1e-3)
