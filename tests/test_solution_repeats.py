"""A solution (recognition or retrieval) that lists a query twice is refused naming both lines
(before: the later row silently replaced the earlier, so the score depended on row order);
the submission readers already refused repeats."""
import pytest

from landmark.data.kaggle import read_retrieval_solution, read_solution
from landmark.evaluation.evaluate import evaluate_retrieval


def test_a_retrieval_solution_with_a_repeated_query_is_refused(tmp_path):
    solution = tmp_path / "solution.csv"
    solution.write_text("id,images,Usage\nq1,a b,Public\nq2,c,Public\nq1,d,Private\n")
    with pytest.raises(ValueError, match=r"solution.csv:4: query q1 is listed twice \(also on line 2\)"):
        read_retrieval_solution(solution)
    submission = tmp_path / "submission.csv"
    submission.write_text("id,images\nq1,d\nq2,c\n")
    with pytest.raises(ValueError, match="listed twice"):
        evaluate_retrieval(submission, solution)


def test_a_recognition_solution_with_a_repeated_query_is_refused(tmp_path):
    solution = tmp_path / "solution.csv"
    solution.write_text("id,landmarks,Usage\nx,1,Public\ny,2,Public\nz,,Private\ny,3,Public\n")
    with pytest.raises(ValueError, match=r"solution.csv:5: query y is listed twice \(also on line 3\)"):
        read_solution(solution)


def test_solutions_without_repeats_read_as_before(tmp_path):
    solution = tmp_path / "solution.csv"
    solution.write_text("id,images,Usage\nq1,a b,Public\nq2,None,Ignored\nq3,,Ignored\n")
    assert read_retrieval_solution(solution) == ({"q1": ["a", "b"]}, None)
    recognition = tmp_path / "recognition.csv"
    recognition.write_text("id,landmarks\nx,1\ny,\n")
    assert read_solution(recognition) == {"x": {"1"}, "y": set()}
