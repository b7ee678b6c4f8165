"""Class selection and per-class split on known counts."""
import pandas as pd
import pytest

from landmark.data import read_train, select_classes, split_per_class


def frame_of(sizes: dict) -> pd.DataFrame:
    rows = [(f"{lid}_{k}", lid) for lid, n in sizes.items() for k in range(n)]
    frame = pd.DataFrame(rows, columns=["id", "landmark_id"])
    frame["landmark_id"] = frame["landmark_id"].astype("category")
    return frame


SIZES = {"a": 1, "b": 2, "c": 3, "d": 5, "e": 10, "f": 100}
# (train, val, test) per class at 70/20/10: round half up, at least one train image
EXPECTED = {"a": (1, 0, 0), "b": (2, 0, 0), "c": (2, 1, 0), "d": (3, 1, 1), "e": (7, 2, 1), "f": (70, 20, 10)}


def test_split_counts_per_class():
    frame = frame_of(SIZES)
    labels, summary = split_per_class(frame, 0.2, 0.1, seed=0)
    frame["split"] = labels
    for lid, (tr, va, te) in EXPECTED.items():
        got = frame[frame["landmark_id"] == lid]["split"].value_counts()
        assert (got.get("train", 0), got.get("val", 0), got.get("test", 0)) == (tr, va, te), lid
    assert (summary.train, summary.val, summary.test) == (85, 24, 12)
    assert summary.classes_train_only == 2          # a, b
    assert summary.classes_without_val == 2         # a, b
    assert summary.classes_without_test == 3        # a, b, c


def test_split_is_seeded_and_random_within_class():
    frame = frame_of({"x": 50, "y": 50})
    a, _ = split_per_class(frame, 0.2, 0.1, seed=1)
    b, _ = split_per_class(frame, 0.2, 0.1, seed=1)
    c, _ = split_per_class(frame, 0.2, 0.1, seed=2)
    assert (a == b).all() and not (a == c).all()
    assert not (a[:35] == "train").all()  # not simply the first rows of each class


def test_extreme_fractions_keep_one_train_image():
    labels, summary = split_per_class(frame_of({"a": 1, "b": 2}), 0.5, 0.4, seed=0)
    assert sorted(labels) == ["train", "train", "val"]
    with pytest.raises(ValueError):
        split_per_class(frame_of({"a": 3}), 0.6, 0.5)


def test_select_classes_min_images_and_max_classes():
    frame = frame_of(SIZES)
    kept, summary = select_classes(frame, min_images_per_class=3)
    assert sorted(kept["landmark_id"].unique()) == ["c", "d", "e", "f"]
    kept, summary = select_classes(frame, min_images_per_class=2, max_classes=2)
    assert sorted(kept["landmark_id"].unique()) == ["e", "f"]
    assert summary["classes_kept"] == 2 and summary["images_kept"] == 110
    assert list(kept["landmark_id"].cat.categories) == ["e", "f"]


def test_read_landmarks13_gldv2_layout(l13):
    frame = read_train(l13)
    assert len(frame) == 720 and frame["landmark_id"].nunique() == 13
    clean = read_train(l13, clean=True)
    assert len(clean) == 606 and set(clean["id"]) <= set(frame["id"])
    labels, summary = split_per_class(frame, 0.2, 0.1, seed=0)
    assert summary.classes_train_only == 0 and summary.train + summary.val + summary.test == 720
