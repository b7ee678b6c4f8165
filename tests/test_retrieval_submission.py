"""Kaggle retrieval submissions: the format, mAP@100 on hand-computed cases (GLDv2 definition),
precision@10, the Revisited Oxford/Paris setups from easy/hard/junk columns, and `landmark evaluate`
dispatching on a retrieval solution."""
import json

import pytest
from typer.testing import CliRunner

from landmark.cli import app
from landmark.data.kaggle import read_retrieval_solution, read_retrieval_submission, write_retrieval_submission
from landmark.evaluation.evaluate import evaluate_retrieval
from landmark.evaluation.retrieval_metrics import mean_average_precision, precision_at_k, revisited_map_ranked

# Kaggle / GLDv2: AP@100(q) = 1/min(m_q, 100) * sum_{k<=100} P_q(k) rel_q(k); mAP = mean over solution queries.
RANKED = {"q1": ["a", "x", "b", "a", "y"],   # a@1: 1/1, x, b@3: 2/3, a again (no credit), y
          "q3": ["x", "e"]}                  # e@2: 1/2
SOLUTION = {"q1": ["a", "b", "c"], "q2": ["d"], "q3": ["e", "f"]}   # q2 ranked nothing: AP 0
AP = {"q1": (1 + 2 / 3) / 3, "q2": 0.0, "q3": (1 / 2) / 2}
MAP = sum(AP.values()) / 3   # 0.268518...


def test_map_at_100_on_a_hand_computed_case():
    assert mean_average_precision(RANKED, SOLUTION) == pytest.approx(MAP)
    assert MAP == pytest.approx(0.2685185, abs=1e-6)


def test_map_reads_only_the_first_100_and_divides_by_min_relevant_100():
    relevant = [f"r{i}" for i in range(150)]
    assert mean_average_precision({"q": relevant}, {"q": relevant}) == pytest.approx(1.0)   # 100 of 150: AP 1
    late = [f"x{i}" for i in range(100)] + ["r0"]                                          # 101st: not read
    assert mean_average_precision({"q": late}, {"q": relevant}) == 0.0


def test_precision_at_10():
    assert precision_at_k(RANKED, SOLUTION, 10) == pytest.approx((2 / 10 + 0 + 1 / 10) / 3)


def test_revisited_setups_from_rankings():
    # junk j, hard b, easy a; ranking j b x a -> medium (junk removed): b@0, a@2
    labels = {"q": {"easy": ["a"], "hard": ["b"], "junk": ["j"]}}
    found = revisited_map_ranked({"q": ["j", "b", "x", "a"]}, labels)
    assert found["medium"]["map"] == pytest.approx((1 + 1) / 2 / 2 + (1 / 2 + 2 / 3) / 2 / 2)   # 0.79167
    assert found["easy"]["map"] == pytest.approx((0 + 1 / 2) / 2)                            # x a: a@1
    assert found["hard"]["map"] == pytest.approx(1.0)                                        # b x: b@0


def test_submission_round_trip_and_bad_ids(tmp_path):
    path = tmp_path / "sub.csv"
    write_retrieval_submission({"q1": ["a", "b"], "q2": []}, path)
    assert path.read_text().splitlines() == ["id,images", "q1,a b", "q2,"]
    assert read_retrieval_submission(path) == {"q1": ["a", "b"], "q2": []}
    with pytest.raises(ValueError, match="space or comma"):
        write_retrieval_submission({"q1": ["a b"]}, tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def _files(tmp_path, labels: bool = False):
    sub, sol = tmp_path / "sub.csv", tmp_path / "solution.csv"
    write_retrieval_submission(RANKED, sub)
    rows = ["id,images,Usage" + (",easy,hard,junk" if labels else "")]
    for q, ids in SOLUTION.items():
        rows.append(f"{q},{' '.join(ids)},Public" + (f",{' '.join(ids)},," if labels else ""))
    rows.append("q9,None,Ignored" + (",,," if labels else ""))   # Kaggle's queries without a relevant image
    sol.write_text("\n".join(rows) + "\n")
    return sub, sol


def test_evaluate_retrieval_files_and_cli(tmp_path):
    sub, sol = _files(tmp_path)
    relevant, labels = read_retrieval_solution(sol)
    assert set(relevant) == {"q1", "q2", "q3"} and labels is None
    result = evaluate_retrieval(sub, sol)
    assert result["map@100"] == pytest.approx(MAP) and result["queries"] == 3 and result["ranked"] == 2
    done = CliRunner().invoke(app, ["evaluate", str(sub), "--solution", str(sol)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout.strip().splitlines()[-1])["map@100"] == pytest.approx(MAP)


def test_evaluate_retrieval_with_revisited_labels(tmp_path):
    sub, sol = _files(tmp_path, labels=True)
    result = evaluate_retrieval(sub, sol)
    # every relevant image easy: Easy = Medium; Hard has no positive in any query (0)
    assert result["revisited"]["easy"]["map"] == pytest.approx(result["revisited"]["medium"]["map"])
    q1 = (1 + (1 / 2 + 2 / 3) / 2) / 3          # trapezoids: a@0, b@2 of 3 positives
    q3 = ((0 + 1 / 2) / 2) / 2                  # e@1 of 2
    assert result["revisited"]["medium"]["map"] == pytest.approx((q1 + 0 + q3) / 3)
