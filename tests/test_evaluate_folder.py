"""landmark evaluate with a labelled folder tree as the solution (class folders named by id or by
name, no_landmark/ or --nonlandmarks apart), on real landmarks13 and nonlandmarks photos linked
into a tree made in the test; and --model RUN --folder TREE predicting and scoring in one go."""
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import DATA
from landmark.data import image_path, read_queries
from landmark.data.kaggle import write_submission
from landmark.evaluation import evaluate
from landmark.evaluation.evaluate import NONLANDMARK_PREFIX, folder_solution

MACHU, PETRA = ["09b94794cb834d50", "58c40deac2687de1"], ["20edec4333593175", "40a3effbdea65066", "552d5550d046b122"]
BASKET, OPENER = "2aadb4261ffa716a", "2aae54d971db49de"   # nonlandmarks: a shopping basket, a can opener


def _nonlandmark(image_id):
    return DATA / "nonlandmarks" / "images" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


@pytest.fixture
def tree(l13, tmp_path):
    """tree/machu_picchu/2019/ (2 photos), tree/Petra_Jordan/ (3), tree/no_landmark/ (1), one loose photo."""
    root = tmp_path / "tree"
    for folder, ids in (("machu_picchu/2019", MACHU), ("Petra_Jordan", PETRA)):
        (root / folder).mkdir(parents=True)
        for i in ids:
            (root / folder / f"{i}.jpg").symlink_to(image_path(l13, i, "test"))
    (root / "no_landmark").mkdir()
    (root / "no_landmark" / "basket.jpg").symlink_to(_nonlandmark(BASKET))
    (root / "loose.jpg").symlink_to(image_path(l13, PETRA[0], "test"))
    return root


def test_folder_solution_labels_by_folder(tree, tmp_path):
    queries, found = folder_solution(tree)
    truth = found["truth"]
    assert truth == {**{i: {"machu_picchu"} for i in MACHU}, **{i: {"Petra_Jordan"} for i in PETRA}, "basket": set()}
    assert found["unlabelled"] == [str(tree / "loose.jpg")]
    assert set(queries["id"]) <= set(read_queries(tree)["id"])   # the ids predict --images TREE gives
    names = {"9": "Machu Picchu", "11": "Petra Jordan", "1": "Angkor Wat"}
    _, by_name = folder_solution(tree, names=names)
    assert by_name["folders"] == {"machu_picchu": "9", "Petra_Jordan": "11", "no_landmark": ""}
    apart = tmp_path / "other"
    apart.mkdir()
    (apart / "opener.jpg").symlink_to(_nonlandmark(OPENER))
    _, more = folder_solution(tree, nonlandmarks=apart)
    assert more["truth"][NONLANDMARK_PREFIX + "opener"] == set()


def test_a_submission_of_the_tree_is_scored(tree, tmp_path):
    """Predictions (made by hand here) for the tree's photos: 2 of 3 Petra right, both Machu Picchu
    wrong, the basket named with a low score."""
    ids = read_queries(tree).set_index("path")["id"]

    def row(folder, name, lid, score):
        return {"id": ids[str(tree / folder / name)], "landmark_id": lid, "score": score}
    petra, machu = "Petra_Jordan", "machu_picchu/2019"
    rows = [row(petra, f"{PETRA[0]}.jpg", "Petra_Jordan", 0.9), row(petra, f"{PETRA[1]}.jpg", "Petra_Jordan", 0.8),
            row(petra, f"{PETRA[2]}.jpg", "machu_picchu", 0.7), row(machu, f"{MACHU[0]}.jpg", "Petra_Jordan", 0.6),
            row(machu, f"{MACHU[1]}.jpg", "Petra_Jordan", 0.5), row("no_landmark", "basket.jpg", "Petra_Jordan", 0.1),
            {"id": ids[str(tree / "loose.jpg")], "landmark_id": "Petra_Jordan", "score": 0.95}]
    write_submission(pd.DataFrame(rows), tmp_path / "sub.csv")
    result = evaluate(tmp_path / "sub.csv", tree, out=tmp_path / "eval")
    assert result["queries"] == 6 and result["landmark_queries"] == 5 and result["unlabelled"] == 1
    assert result["accuracy"] == pytest.approx(2 / 5)
    assert result["gap"] == pytest.approx((1 / 1 + 2 / 2) / 5)   # ranked: Petra c, Petra c, then wrong ones
    table = pd.read_csv(tmp_path / "eval" / "per_class_accuracy.csv", dtype=str)
    assert dict(zip(table["landmark_id"], table["name"])) == {"Petra_Jordan": "Petra Jordan",
                                                              "machu_picchu": "Machu Picchu"}
    cli = CliRunner().invoke(__import__("landmark.cli", fromlist=["app"]).app,
                             ["evaluate", str(tmp_path / "sub.csv"), "--solution", str(tree),
                              "--out", str(tmp_path / "eval2")])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["accuracy"] == pytest.approx(2 / 5)
    assert (tmp_path / "eval2" / "per_class_accuracy.png").is_file()


def test_a_submission_of_other_photos_is_refused(tree, tmp_path):
    elsewhere = pd.DataFrame([{"id": "elsewhere", "landmark_id": "Petra_Jordan", "score": 0.5}])
    write_submission(elsewhere, tmp_path / "s.csv")
    with pytest.raises(ValueError, match="predict the folder itself"):
        evaluate(tmp_path / "s.csv", tree)
    empty = tmp_path / "empty"
    (empty / "no_landmark").mkdir(parents=True)
    (empty / "no_landmark" / "b.jpg").symlink_to(_nonlandmark(BASKET))
    with pytest.raises(ValueError, match="no photo in a landmark folder"):
        folder_solution(empty)


def test_folders_named_alike_are_refused_as_train_refuses_them(tree, tmp_path):
    """tree/Petra_Jordan/ beside tree/petra jordan/: landmark train refuses such a tree; evaluate
    scored the two as two landmarks (a submission of a model trained on one of them counted the
    other folder's photos wrong) and, with a model's names, silently made them one."""
    (tree / "petra jordan").mkdir()
    (tree / "petra jordan" / "more.jpg").symlink_to(image_path(DATA / "landmarks13", MACHU[0], "test"))
    for names in (None, {"11": "Petra Jordan"}):
        with pytest.raises(ValueError, match=r"class folders .*Petra_Jordan and .*petra jordan differ only in case"):
            folder_solution(tree, names=names)
    rows = pd.DataFrame([{"id": PETRA[0], "landmark_id": "Petra_Jordan", "score": 0.9}])
    write_submission(rows, tmp_path / "sub.csv")
    cli = CliRunner().invoke(__import__("landmark.cli", fromlist=["app"]).app,
                             ["evaluate", str(tmp_path / "sub.csv"), "--solution", str(tree)])
    assert cli.exit_code != 0 and "differ only in case, '_' or spaces" in cli.output
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_model_and_folder_predict_and_score(recognizer_run, rec, tree, tmp_path):
    from landmark.cli import app
    result = CliRunner().invoke(app, ["evaluate", "--model", str(recognizer_run), "--folder", str(tree),
                                      "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["folders"] == {"machu_picchu": "9", "Petra_Jordan": "11", "no_landmark": ""}
    assert printed["queries"] == 6 and printed["unreadable"] == 0
    # the same numbers as the library's answers scored by hand
    photos = ([tree / "machu_picchu/2019" / f"{i}.jpg" for i in MACHU]
              + [tree / "Petra_Jordan" / f"{i}.jpg" for i in PETRA])
    answers = rec.recognize(photos)
    right = sum(a.landmark_id == lid for a, lid in zip(answers, ["9"] * 2 + ["11"] * 3))
    assert printed["accuracy"] == pytest.approx(right / 5)
    # how the 6 photos were answered, named or not (the counts were missing before 2026-12-07)
    everything = rec.recognize(photos + [tree / "no_landmark" / "basket.jpg"])
    named = sum(a.is_landmark for a in everything)
    assert printed["verdicts"] == {"named": named, "no_landmark": 6 - named, "unreadable": 0}
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["verdicts"] == printed["verdicts"]
    table = pd.read_csv(tmp_path / "eval" / "per_class_accuracy.csv", dtype=str)
    assert set(table["name"]) <= set(rec.names.values()) and not any(n.isdigit() for n in table["name"])
    assert (tmp_path / "eval" / "submission.csv").is_file()
    both = CliRunner().invoke(app, ["evaluate", str(tmp_path / "eval" / "submission.csv"),
                                    "--model", str(recognizer_run), "--folder", str(tree)])
    assert both.exit_code == 2 and "not both" in both.output


def test_json_for_people_keeps_non_ascii_names(l13, tmp_path):
    """evaluate's printed JSON and metrics.json write Sacré-Cœur as it is (UTF-8, valid JSON), not
    Sacr\\u00e9-C\\u0153ur."""
    from landmark.cli import app
    tree = tmp_path / "tree"
    (tree / "Sacré-Cœur").mkdir(parents=True)
    for i in PETRA:
        (tree / "Sacré-Cœur" / f"{i}.jpg").symlink_to(image_path(l13, i, "test"))
    ids = read_queries(tree)["id"]
    write_submission(pd.DataFrame({"id": ids, "landmark_id": "Sacré-Cœur", "score": 0.9}), tmp_path / "sub.csv")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "sub.csv"), "--solution", str(tree),
                                      "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert '"Sacré-Cœur": "Sacré-Cœur"' in result.stdout and "\\u00e9" not in result.stdout
    assert json.loads(result.stdout)["folders"] == {"Sacré-Cœur": "Sacré-Cœur"}
    raw = (tmp_path / "eval" / "metrics.json").read_bytes()
    assert "Sacré-Cœur".encode("utf-8") in raw and b"\\u00e9" not in raw
    assert json.loads(raw.decode("utf-8"))["accuracy"] == 1.0


def test_verdict_counts_do_not_read_a_landmark_named_like_a_verdict():
    """A landmark whose name is 'no landmark' or 'unreadable' (a names CSV, an enrolment's name):
    its photos named as it count as named; counting the verdict words counted them as
    'no landmark' / 'unreadable'."""
    from landmark.inference.labelled import verdict_counts
    from landmark.inference.voting import answers_frame

    class Rec:
        def name(self, lid):
            return {"1": "no landmark", "2": "unreadable", "3": "Petra"}.get(lid, lid)

        def decide(self, lid, score, *rest):
            return score >= 0.5, None
    queries = pd.DataFrame({"id": list("abcdef"), "path": [f"{i}.jpg" for i in "abcdef"]})
    best = {0: ("1", 0.9), 1: ("2", 0.8), 2: ("3", 0.7), 3: ("3", 0.1), 4: ("", 0.0)}   # row 5: unreadable
    frame = answers_frame(Rec(), queries, best)
    assert list(frame["verdict"]) == ["no landmark", "unreadable", "Petra", "no landmark", "no landmark",
                                      "unreadable"]
    assert verdict_counts(Rec(), frame) == {"named": 3, "no_landmark": 2, "unreadable": 1}
