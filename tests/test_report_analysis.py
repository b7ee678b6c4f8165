"""The numbers behind the report's pictures, on hand-computed cases."""
import math

import pandas as pd
import pytest

from landmark.evaluation import per_class_accuracy
from landmark.reporting.analysis import (accuracy_by_count_bin, accuracy_vs_count, class_names, confusion_pairs, pick_classes,
                                         query_table, train_counts)


def _preds(rows):
    return pd.DataFrame(rows, columns=["id", "landmark_id", "score"])


# 3 classes: A has 4 queries (2 right), B 2 queries (0 right), C 1 query (1 right);
# q8 shows no landmark, q9 shows A and C.
SOLUTION = {"q1": {"A"}, "q2": {"A"}, "q3": {"A"}, "q4": {"A"}, "q5": {"B"}, "q6": {"B"}, "q7": {"C"},
            "q8": set(), "q9": {"A", "C"}}
PREDS = _preds([("q1", "A", .9), ("q2", "A", .8), ("q3", "B", .7), ("q4", "C", .6), ("q5", "A", .5),
                ("q6", "A", .4), ("q7", "C", .3), ("q8", "B", .2), ("q9", "B", .1)])


def test_per_class_accuracy_known_case():
    table = per_class_accuracy(PREDS, SOLUTION).set_index("landmark_id")
    # q9 (wrong) counts for A and for C
    assert table.loc["A", "queries"] == 5 and table.loc["A", "correct"] == 2
    assert table.loc["B", "accuracy"] == 0.0
    assert table.loc["C", "accuracy"] == pytest.approx(0.5)
    assert list(table.index) == ["B", "A", "C"]  # sorted by accuracy: 0, 0.4, 0.5


def test_confusion_pairs_hand_made():
    pairs = confusion_pairs(PREDS, SOLUTION)
    # A->B (q3, q9), A->C (q4), B->A (q5, q6), C->B (q9); q8 (no landmark) never counts
    got = {(r.class_a, r.class_b): (r.a_as_b, r.b_as_a, r.total) for r in pairs.itertuples()}
    assert got == {("A", "B"): (2, 2, 4), ("A", "C"): (1, 0, 1), ("B", "C"): (0, 1, 1)}
    assert list(pairs["total"]) == [4, 1, 1]
    assert confusion_pairs(PREDS, SOLUTION, top=1)[["class_a", "class_b"]].values.tolist() == [["A", "B"]]


def test_confusion_pairs_ignores_missing_predictions():
    pairs = confusion_pairs(_preds([("q1", "", float("nan"))]), {"q1": {"A"}, "q2": {"B"}})
    assert pairs.empty


def test_accuracy_vs_count_correlation():
    per_class = pd.DataFrame({"landmark_id": ["a", "b", "c", "d"], "queries": [2, 2, 2, 2],
                              "correct": [0, 1, 2, 2], "accuracy": [0.0, 0.5, 1.0, 1.0]})
    counts = pd.Series({"a": 10, "b": 20, "c": 30, "d": 100})
    table, stats = accuracy_vs_count(per_class, counts)
    assert table["train_images"].tolist() == [10, 20, 30, 100]
    # by hand: ranks x = 1,2,3,4; ranks y = 1,2,3.5,3.5 -> Spearman = 0.9487
    assert stats["spearman"] == pytest.approx(0.9486833, abs=1e-6)
    x, y = [10, 20, 30, 100], [0, .5, 1, 1]
    mx, my = sum(x) / 4, sum(y) / 4
    r = sum((a - mx) * (b - my) for a, b in zip(x, y)) / math.sqrt(
        sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    assert stats["pearson"] == pytest.approx(r)
    assert stats["classes"] == 4


def test_accuracy_vs_count_constant_accuracy_is_nan():
    per_class = pd.DataFrame({"landmark_id": ["a", "b", "c"], "queries": [1, 1, 1], "correct": [1, 1, 1],
                              "accuracy": [1.0, 1.0, 1.0]})
    _, stats = accuracy_vs_count(per_class, pd.Series({"a": 1, "b": 2}))
    assert math.isnan(stats["pearson"]) and math.isnan(stats["spearman"])


def test_pick_classes():
    per_class = pd.DataFrame({"landmark_id": ["a", "b", "c", "d", "e"], "queries": [4, 2, 4, 10, 2],
                              "correct": [0, 0, 2, 4, 2], "accuracy": [0.0, 0.0, 0.5, 0.4, 1.0]})
    worst, middle = pick_classes(per_class, worst=1, middle=2)
    assert worst == ["a"]  # tie at 0 goes to the class with more queries
    assert middle == ["c", "d"]  # |0.5-0.5| = 0, then |0.4-0.5|; b (0.0) is farther


def test_train_counts_and_query_table():
    split = pd.DataFrame({"id": list("abcdef"), "landmark_id": ["1", "1", "2", "1", "10", "2"],
                          "split": ["train", "train", "train", "test", "train", "val"]})
    counts = train_counts(split)
    assert counts.to_dict() == {"1": 2, "10": 1, "2": 1} and list(counts.index) == ["1", "10", "2"]
    queries = pd.DataFrame({"id": ["q1", "q8", "qx"], "path": ["p1", "p8", "px"]})
    table = query_table(queries, PREDS, SOLUTION)
    assert table["correct"].tolist() == [True, False, False]  # q8: no landmark; qx: no prediction
    assert table["landmark_id"].tolist() == ["A", "B", ""]


def test_class_names_from_real_data(l13):
    names = class_names(l13)
    assert names["12"] == "Taj Mahal" and names["0"] == "Alhambra Palace" and len(names) == 13
    assert class_names(None) == {}


def test_data_paths_for_gldv2_and_folder_trees(tmp_path):
    """The held-out split of a run on a folder tree is found where the photos are, not in a GLDv2 path."""
    import os

    from conftest import L13
    from landmark.data import image_path, read_train
    from landmark.reporting.report_data import data_paths
    if not L13.is_dir():
        pytest.skip("no landmarks13")
    first = read_train(L13)["id"].iloc[0]
    assert data_paths(L13)[first] == str(image_path(L13, first))
    (tmp_path / "taj").mkdir()
    os.symlink(image_path(L13, first), tmp_path / "taj" / "photo1.jpg")
    assert data_paths(tmp_path) == {"photo1": str(tmp_path / "taj" / "photo1.jpg")}


def test_accuracy_by_count_bin_known_values():
    # 5 classes: photos 3, 12, 25, 40, 90 -> bins 1-9, 10-29 (two classes), 30-59, >=60
    table = pd.DataFrame({"landmark_id": ["a", "b", "c", "d", "e"], "queries": [2, 4, 1, 5, 10],
                          "correct": [0, 3, 1, 5, 9], "accuracy": [0.0, 0.75, 1.0, 1.0, 0.9],
                          "train_images": [3, 12, 25, 40, 90]})
    bins = accuracy_by_count_bin(table)
    assert bins["train_images"].tolist() == ["1-9", "10-29", "30-59", ">=60"]
    assert bins["classes"].tolist() == [1, 2, 1, 1] and bins["queries"].tolist() == [2, 5, 5, 10]
    assert bins["accuracy"].tolist() == pytest.approx([0.0, 4 / 5, 1.0, 0.9])      # per query
    assert bins["class_mean"].tolist() == pytest.approx([0.0, 0.875, 1.0, 0.9])   # per class
    # other edges; an empty bin is left out, classes under the first edge too
    bins = accuracy_by_count_bin(table, edges=(10, 50, 60))
    assert bins["train_images"].tolist() == ["10-49", ">=60"] and bins["classes"].tolist() == [3, 1]
