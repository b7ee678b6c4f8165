"""GAP, accuracy and per-class accuracy on cases computed by hand."""
import json
import random

import pandas as pd
import pytest

from landmark.data.kaggle import read_solution, read_submission, write_submission
from landmark.evaluation import accuracy, evaluate, gap, per_class_accuracy, recognition_scores


def preds(rows):
    return pd.DataFrame(rows, columns=["id", "landmark_id", "score"])


SOLUTION = {"q1": {"1"}, "q2": {"2"}, "q3": {"3"}, "n1": set()}


def test_gap_basic_ranking():
    # ranked: q1 correct, q2 wrong, q3 correct -> (1/1 + 2/3) / 3 landmark queries
    p = preds([("q1", "1", 0.9), ("q2", "9", 0.8), ("q3", "3", 0.7)])
    assert gap(p, SOLUTION) == pytest.approx((1 + 2 / 3) / 3)


def test_gap_perfect_and_zero():
    assert gap(preds([("q1", "1", 0.3), ("q2", "2", 0.2), ("q3", "3", 0.1)]), SOLUTION) == pytest.approx(1.0)
    assert gap(preds([("q1", "5", 0.3), ("q2", "5", 0.2), ("q3", "5", 0.1)]), SOLUTION) == 0.0


def test_non_landmark_prediction_stays_in_ranking_and_hurts():
    # ranked: q1 c (P=1), n1 w, q2 w, q3 c (P=2/4) -> (1 + 0.5) / 3
    p = preds([("q1", "1", 0.9), ("n1", "1", 0.85), ("q2", "9", 0.8), ("q3", "3", 0.7)])
    assert gap(p, SOLUTION) == pytest.approx(0.5)
    # ignoring non-landmark queries gives back the ranking without n1
    assert gap(p, SOLUTION, ignore_non_landmarks=True) == pytest.approx((1 + 2 / 3) / 3)
    # a non-landmark prediction ranked last cannot hurt
    p_last = preds([("q1", "1", 0.9), ("q2", "9", 0.8), ("q3", "3", 0.7), ("n1", "1", 0.1)])
    assert gap(p_last, SOLUTION) == pytest.approx((1 + 2 / 3) / 3)


def test_query_without_prediction_counts_in_denominator_only():
    solution = {**SOLUTION, "q4": {"4"}}
    p = preds([("q1", "1", 0.9), ("q2", "9", 0.8), ("q3", "3", 0.7), ("q4", "", float("nan"))])
    assert gap(p, solution) == pytest.approx((1 + 2 / 3) / 4)
    assert gap(p.iloc[:3], solution) == pytest.approx((1 + 2 / 3) / 4)


def test_ties_break_by_query_id_whatever_the_file_order():
    solution = {"a": {"1"}, "b": {"2"}}
    # equal scores: Kaggle order puts id "a" (wrong) before "b" (correct): P(2) = 1/2 -> 0.5 / 2
    for rows in ([("a", "9", 0.5), ("b", "2", 0.5)], [("b", "2", 0.5), ("a", "9", 0.5)]):
        assert gap(preds(rows), solution) == pytest.approx(0.25)


def test_several_ground_truth_landmarks_and_unknown_ids():
    solution = {"q1": {"1", "7"}, "q2": {"2"}}
    p = preds([("q1", "7", 0.9), ("zz", "2", 0.95), ("q2", "2", 0.1)])
    assert gap(p, solution) == pytest.approx(1.0)  # zz is not a query: ignored


def test_duplicate_prediction_is_an_error():
    with pytest.raises(ValueError, match="more than one prediction"):
        gap(preds([("q1", "1", 0.9), ("q1", "2", 0.8)]), SOLUTION)


def test_gap_matches_reference_loop_on_random_cases():
    """Cross-check against a literal transcription of the GLDv2 reference algorithm."""
    rng = random.Random(0)
    for _ in range(50):
        solution = {f"q{i:02d}": ({str(rng.randrange(4))} if rng.random() < 0.6 else set()) for i in range(20)}
        rows = [(q, str(rng.randrange(4)), round(rng.random(), 1)) for q in solution if rng.random() < 0.8]
        ranked = sorted(sorted(rows, key=lambda r: (r[0], r[1])), key=lambda r: r[2], reverse=True)
        for ignore in (False, True):
            total = correct = 0
            ref = 0.0
            for q, lid, _ in ranked:
                if ignore and not solution[q]:
                    continue
                total += 1
                if lid in solution[q]:
                    correct += 1
                    ref += correct / total
            positives = sum(1 for v in solution.values() if v)
            expected = ref / positives if positives else 0.0
            assert gap(preds(rows), solution, ignore_non_landmarks=ignore) == pytest.approx(expected)


def test_accuracy_over_landmark_queries_only():
    p = preds([("q1", "1", 0.9), ("q2", "9", 0.8), ("n1", "1", 0.7)])  # q3 has no prediction
    assert accuracy(p, SOLUTION) == pytest.approx(1 / 3)


def test_per_class_accuracy_known_case():
    solution = {"a": {"1"}, "b": {"1"}, "c": {"2"}, "d": {"2"}, "e": {"2"}, "f": set()}
    p = preds([("a", "1", 1), ("b", "2", 1), ("c", "2", 1), ("d", "2", 1), ("e", "1", 1), ("f", "1", 1)])
    table = per_class_accuracy(p, solution).set_index("landmark_id")
    assert table.loc["1", "queries"] == 2 and table.loc["1", "accuracy"] == pytest.approx(0.5)
    assert table.loc["2", "queries"] == 3 and table.loc["2", "accuracy"] == pytest.approx(2 / 3)


def test_submission_round_trip_and_evaluate_files(tmp_path):
    p = preds([("q1", "1", 0.9), ("q2", "9", 0.8), ("q3", "", float("nan")), ("n1", "1", 0.85)])
    write_submission(p, tmp_path / "sub.csv")
    assert (tmp_path / "sub.csv").read_text().splitlines()[:2] == ["id,landmarks", "q1,1 0.900000"]
    back = read_submission(tmp_path / "sub.csv")
    assert back["landmark_id"].tolist() == ["1", "9", "", "1"]
    (tmp_path / "sol.csv").write_text("id,landmarks,Usage\nq1,1,Public\nq2,2,Private\nq3,3,Public\nn1,,Public\n")
    assert read_solution(tmp_path / "sol.csv", usage="Public") == {"q1": {"1"}, "q3": {"3"}, "n1": set()}
    result = evaluate(tmp_path / "sub.csv", tmp_path / "sol.csv", out=tmp_path / "eval")
    # ranked: q1 c, n1 w, q2 w -> 1 / 3 landmark queries
    assert result["gap"] == pytest.approx(1 / 3)
    assert result["gap_landmarks_only"] == pytest.approx(1 / 3)
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["missing_predictions"] == 1  # q3: its row is empty
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["metrics.json", "per_class_accuracy.csv"]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == result


def test_recognition_scores_is_the_three_scores():
    p = preds([("q1", "1", 0.9), ("q2", "9", 0.8), ("n1", "1", 0.7)])
    assert recognition_scores(p, SOLUTION) == {
        "gap": gap(p, SOLUTION), "gap_landmarks_only": gap(p, SOLUTION, ignore_non_landmarks=True),
        "accuracy": accuracy(p, SOLUTION)}


def test_cli_evaluate_writes_numbers_and_the_picture(tmp_path):
    """``evaluate()`` draws nothing; ``landmark evaluate --out`` adds the picture from the CSV."""
    from typer.testing import CliRunner

    from landmark.cli import app
    write_submission(preds([("q1", "1", 0.9), ("q2", "9", 0.8), ("n1", "1", 0.85)]), tmp_path / "sub.csv")
    (tmp_path / "sol.csv").write_text("id,landmarks,Usage\nq1,1,Public\nq2,2,Private\nq3,3,Public\nn1,,Public\n")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "sub.csv"), "--solution", str(tmp_path / "sol.csv"),
                                      "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert list(printed)[:3] == ["gap", "gap_landmarks_only", "accuracy"]
    assert printed == evaluate(tmp_path / "sub.csv", tmp_path / "sol.csv")
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "metrics.json", "per_class_accuracy.csv", "per_class_accuracy.png"]


def test_malformed_submission_names_the_row(tmp_path):
    (tmp_path / "bad.csv").write_text("id,landmarks\nq1,1 high\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        read_submission(tmp_path / "bad.csv")
