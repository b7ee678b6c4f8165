"""Leave-class-out thresholds at the edges: a model of 1 class (nothing to leave out: before, each
photo "answered" its own landmark with probability 1 flagged wrong, and the classifier threshold
became 1.0, rejecting the landmark's own photos), of 2 classes, and classes of one photo."""
import numpy as np
import pytest

from landmark.retrieval.reference import choose_thresholds
from landmark.retrieval.scoring import leave_class_out


class Index:
    """An in-memory stand-in for LandmarkIndex (inner product over L2-normalised rows)."""

    def __init__(self, vectors, labels):
        self.vectors, self.labels = np.asarray(vectors, np.float32), np.asarray(labels, dtype=object)

    def __len__(self):
        return len(self.labels)

    def search(self, queries, k):
        sims = queries @ self.vectors.T
        rows = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(sims, rows, 1), rows


def _unit(rng, n, d=8):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_one_class_is_refused_by_leave_class_out():
    with pytest.raises(ValueError, match="top 2 or more classes"):
        leave_class_out(np.array(["a"] * 3), np.array([["a"]] * 3), np.ones((3, 1)))


def test_a_model_of_one_class_keeps_its_photos():
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 6)
    truth = np.array(["a"] * 4 + ["", ""])   # 4 photos of the landmark, 2 of none
    probs = np.ones((6, 1))                   # one class: softmax 1.0 for every photo
    chosen, record = choose_thresholds(Index(vectors[:4], ["a"] * 4), truth, np.array([["a"]] * 6), probs,
                                       vectors, simulate_unknown=True)
    assert record["simulated_unknown"] == 0 and record["method"] == "non-landmark photos"
    assert record["validation_photos"] == 4 and record["nonlandmark_photos"] == 2


def test_two_classes_of_one_photo_each():
    """Leaving one of two classes out answers the other with probability 1 (renormalised)."""
    rng = np.random.default_rng(1)
    vectors = _unit(rng, 2)
    truth = np.array(["a", "b"])
    labels, probs = np.array([["a", "b"], ["b", "a"]]), np.array([[0.7, 0.3], [0.6, 0.4]])
    other, p = leave_class_out(truth, labels, probs)
    assert list(other) == ["b", "a"] and np.allclose(p, 1.0)
    chosen, record = choose_thresholds(Index(vectors, truth), truth, labels, probs, vectors, simulate_unknown=True)
    assert record["method"] == "leave-class-out" and record["simulated_unknown"] == 2
    # 2 right answers (0.7, 0.6) against 2 simulated unknowns at 1.0: rejecting all makes as many
    # right decisions as accepting all; the widest gap puts the threshold just above 1
    assert chosen["classifier"] == float(np.nextafter(1.0, 2.0))


def test_the_end_of_training_lines_say_how_the_threshold_was_chosen_and_on_how_many_photos():
    """One line: the method (leave-class-out when no --nonlandmarks was given) and the value; one
    more when it rests on fewer than FEW_VALIDATION_PHOTOS validation photos; one line when none."""
    from landmark.retrieval.reference import FEW_VALIDATION_PHOTOS, threshold_line, threshold_warning
    record = {"method": "leave-class-out", "validation_photos": 8, "simulated_unknown": 8, "nonlandmark_photos": 0,
              "classifier": 0.7977, "reference": 0.17859, "right_decisions": {"classifier": 0.81, "reference": 0.875}}
    assert threshold_line(record) == (
        "no-landmark threshold 0.1786 (reference score; classifier alone 0.798), chosen without --nonlandmarks, "
        "by leave-class-out on 8 validation photos (each also scored as if its landmark were unknown): "
        "88% right decisions")
    assert threshold_warning(record).startswith("warning: the no-landmark threshold rests on only 8 validation "
                                                "photos (fewer than 50)")
    assert "--nonlandmarks" in threshold_warning(record)
    many = {**record, "validation_photos": FEW_VALIDATION_PHOTOS}
    assert threshold_warning(many) is None
    given = {**record, "method": "non-landmark photos", "validation_photos": 1, "nonlandmark_photos": 30}
    assert "on 1 validation photo and 30 non-landmark photos (--nonlandmarks)" in threshold_line(given)
    assert "only 1 validation photo (" in threshold_warning(given) and "--nonlandmarks" not in threshold_warning(given)
    none = {"method": "none", "reason": "the run has no validation photos"}
    assert threshold_line(none).startswith("no 'no landmark' threshold chosen: the run has no validation photos; "
                                           "answers use the default")
    assert threshold_warning(none) is None and "\n" not in threshold_line(none)
