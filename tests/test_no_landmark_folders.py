"""Labelled trees beside a model: a ``no_landmark/`` folder (photos of no landmark) is left out of an
index by ``index build`` / ``index add --data`` (it was indexed as a landmark named "No Landmark"),
by the one rule ``evaluate`` reads too (:func:`landmark.data.names.is_no_landmark_folder`); and
``evaluate --model RUN --folder TREE`` warns of class folders whose landmark the model does not know.
Real landmarks13 and nonlandmarks photos linked into trees made here, a tiny untrained checkpoint."""
import json
import warnings

import pytest
from typer.testing import CliRunner

from _helpers import tiny_checkpoint
from conftest import DATA
from landmark.cli import app
from landmark.data import image_path
from landmark.data.names import is_no_landmark_folder
from landmark.evaluation.evaluate import folder_landmarks

PREPROCESS = {"size": 64, "resize": 72, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
MACHU, PETRA = ["09b94794cb834d50", "58c40deac2687de1"], ["20edec4333593175", "40a3effbdea65066"]
BASKET, OPENER = "2aadb4261ffa716a", "2aae54d971db49de"   # nonlandmarks: a shopping basket, a can opener
runner = CliRunner()


def _nonlandmark(image_id):
    return DATA / "nonlandmarks" / "images" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def _tree(l13, root, folders: dict):
    """``root/<folder>/<photo>.jpg`` linked to landmarks13 test photos (or nonlandmarks ones for no_landmark)."""
    for folder, ids in folders.items():
        (root / folder).mkdir(parents=True)
        for i in ids:
            source = _nonlandmark(i) if i in (BASKET, OPENER) else image_path(l13, i, "test")
            (root / folder / f"{i}.jpg").symlink_to(source)
    return root


def test_the_no_landmark_folder_rule_has_one_home():
    for name in ("no_landmark", "No Landmarks", "non-landmarks", "NONLANDMARKS", "not_landmarks"):
        assert is_no_landmark_folder(name), name
    for name in ("landmark", "Petra", "no_landmark_park", "12"):
        assert not is_no_landmark_folder(name), name
    # evaluate reads that rule: a folder of no landmark is scored as no landmark ("")
    assert folder_landmarks(["No-Landmarks", "Petra"]) == {"No-Landmarks": "", "Petra": "Petra"}
    import importlib
    evaluate = importlib.import_module("landmark.evaluation.evaluate")   # the module (the package names a function so)
    assert hasattr(evaluate, "folder_solution")
    assert not hasattr(evaluate, "NO_LANDMARK_FOLDERS") and not hasattr(evaluate, "_is_no_landmark")   # no second copy


def test_singular_and_plural_names_alike():
    """`non_landmark/`, `Non-Landmark/`, `nonlandmark/` and `not_landmark/` were classes (a landmark named "Non
    Landmark") while their plurals were folders of no landmark."""
    for name in ("non_landmark", "Non-Landmark", "NONLANDMARK", "not_landmark", "no_landmark "):
        assert is_no_landmark_folder(name), name
    for name in ("landmarks", "non", "not_a_landmark_park"):
        assert not is_no_landmark_folder(name), name


def test_index_build_and_add_leave_out_no_landmark_folders(l13, tmp_path):
    from landmark.retrieval.index import LandmarkIndex
    tiny_checkpoint(tmp_path / "m.pt", PREPROCESS)
    tree = _tree(l13, tmp_path / "tree", {"Machu_Picchu": MACHU, "no_landmark": [BASKET, OPENER]})
    built = runner.invoke(app, ["index", "build", "--checkpoint", str(tmp_path / "m.pt"), "--data", str(tree),
                                "--out", str(tmp_path / "idx"), "--workers", "0"])
    assert built.exit_code == 0, built.output
    assert ("left out 2 photos of no_landmark/: they show no landmark, so they are not indexed (landmark knn "
            "--nonlandmarks DIR is where such photos are used)\n") in built.stderr
    assert json.loads(built.stdout)["count"] == 2
    index = LandmarkIndex.load(tmp_path / "idx")
    assert sorted(index.labels.tolist()) == ["Machu_Picchu", "Machu_Picchu"]
    more = _tree(l13, tmp_path / "more", {"Petra": PETRA, "Non-Landmarks": [BASKET]})
    added = runner.invoke(app, ["index", "add", str(tmp_path / "idx"), "--data", str(more), "--workers", "0"])
    assert added.exit_code == 0, added.output
    assert "left out 1 photo of Non-Landmarks/: they show no landmark" in added.stderr
    result = json.loads(added.stdout)
    assert result["added"] == 2 and result["new_landmarks"] == ["Petra"]
    assert sorted(set(LandmarkIndex.load(tmp_path / "idx").labels.tolist())) == ["Machu_Picchu", "Petra"]
    # a tree of nothing but photos of no landmark: refused in one line, nothing written
    only = _tree(l13, tmp_path / "only", {"no_landmark": [BASKET]})
    refused = runner.invoke(app, ["index", "build", "--checkpoint", str(tmp_path / "m.pt"), "--data", str(only),
                                  "--out", str(tmp_path / "none"), "--workers", "0"])
    assert refused.exit_code == 2 and refused.stderr.startswith(f"error: every photo of {only} is in no_landmark/"), \
        refused.output
    assert not (tmp_path / "none" / "meta.json").exists()


def test_embeddings_of_a_tree_and_a_no_landmark_label_are_never_indexed_as_a_landmark(l13, tmp_path):
    """`landmark embed --data TREE` keeps no_landmark/'s photos under the landmark id no_landmark; `index build
    --embeddings` of that file indexed them, and recognize then answered a landmark named "No Landmark"
    (is_landmark true).  Now those rows are left out as `--data` leaves them; `--label 'No Landmark'` and
    enrolling the id no_landmark (index add, the service) are refused in one line."""
    import numpy as np
    import pandas as pd

    from landmark.retrieval.embeddings import Embeddings
    from landmark.retrieval.index import LandmarkIndex
    from landmark.retrieval.pipeline import enrol
    model = tmp_path / "m.pt"
    tiny_checkpoint(model, PREPROCESS)
    tree = _tree(l13, tmp_path / "tree", {"Machu_Picchu": MACHU, "Petra": PETRA, "no_landmark": [BASKET, OPENER]})
    embedded = runner.invoke(app, ["embed", str(model), "--data", str(tree), "--out", str(tmp_path / "e.npy"),
                                   "--workers", "0"])
    assert embedded.exit_code == 0, embedded.output
    assert (pd.read_csv(tmp_path / "e.ids.csv", dtype=str)["landmark_id"] == "no_landmark").sum() == 2
    built = runner.invoke(app, ["index", "build", "--embeddings", str(tmp_path / "e.npy"), "--out",
                                str(tmp_path / "idx")])
    assert built.exit_code == 0, built.output
    assert ("left out 2 photos of no_landmark/: they show no landmark, so they are not indexed (landmark knn "
            "--nonlandmarks DIR is where such photos are used)\n") in built.stderr
    index = LandmarkIndex.load(tmp_path / "idx")
    assert sorted(index.labels.tolist()) == ["Machu_Picchu"] * 2 + ["Petra"] * 2
    assert not {BASKET, OPENER} & set(index.items["id"])
    np.testing.assert_allclose(index.stored(np.arange(4)), np.load(tmp_path / "e.npy")[:4].astype(np.float32),
                               atol=1e-3)   # the rows kept are the photos' own vectors
    before = sorted(p.name for p in (tmp_path / "idx").iterdir())
    for command in (["index", "build", "--images", str(tree / "no_landmark"), "--label", "No Landmark",
                     "--checkpoint", str(model), "--out", str(tmp_path / "nl")],
                    ["index", "add", str(tmp_path / "idx"), "--images", str(tree / "no_landmark"),
                     "--label", "no_landmark"]):
        refused = runner.invoke(app, command + ["--workers", "0"])
        assert refused.exit_code == 2, refused.output
        assert refused.stderr.startswith(f"error: --label {command[command.index('--label') + 1]!r} names photos "
                                         f"without a landmark, which are never indexed as a landmark (they would "
                                         f"be answered as one named 'No Landmark'): "), refused.stderr
        assert len(refused.stderr.splitlines()) == 1 and "embed:" not in refused.stderr   # before any embedding
    assert not (tmp_path / "nl").exists() and sorted(p.name for p in (tmp_path / "idx").iterdir()) == before
    labelled = Embeddings(index.stored(np.arange(1)), pd.DataFrame({"id": ["x"], "landmark_id": ["No_Landmarks"]}),
                          model=index.meta["model"])
    with pytest.raises(ValueError, match="^the landmark id 'No_Landmarks' names photos without a landmark"):
        enrol(tmp_path / "idx", labelled)   # the one enrolment path: index add and the service's
    assert len(LandmarkIndex.load(tmp_path / "idx")) == 4


def test_evaluate_folder_warns_of_folders_the_model_does_not_know(l13, tmp_path):
    """The model knows a, b, c: the tree's folders Machu_Picchu/ and Petra/ can never be answered right."""
    from landmark.inference.labelled import UnknownFolderWarning, evaluate_folder
    tiny_checkpoint(tmp_path / "m.pt", PREPROCESS)
    tree = _tree(l13, tmp_path / "tree", {"a": MACHU[:1], "Machu_Picchu": MACHU[1:], "Petra": PETRA[:1],
                                          "no_landmark": [BASKET]})
    with pytest.warns(UnknownFolderWarning) as caught:
        result = evaluate_folder(tmp_path / "m.pt", tree, workers=0)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"2 class folders of {tree} name no landmark the model knows, so their photos can never be answered right: "
        f"Machu_Picchu/, Petra/; name each folder as a landmark of the model (its id or name), or enrol the landmark "
        f"into an index (landmark index add)")
    assert result["queries"] == 4
    # the first 3 named, the rest counted; a tree of known landmarks: no warning
    many = _tree(l13, tmp_path / "many", {k: [MACHU[0]] for k in ("p", "q", "r", "s")})
    with pytest.warns(UnknownFolderWarning, match=r"^4 class folders .*: p/, q/, r/ and 1 more; name each"):
        evaluate_folder(tmp_path / "m.pt", many, workers=0)
    known = _tree(l13, tmp_path / "known", {"a": MACHU[:1], "B": PETRA[:1], "no_landmark": [BASKET]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownFolderWarning)
        evaluate_folder(tmp_path / "m.pt", known, workers=0)


def test_evaluate_prints_the_warning_on_one_line(l13, tmp_path, monkeypatch, capsys):
    """The command's line, as a person reads it (warnings shown on stderr, as outside pytest, which records them)."""
    import sys

    from _helpers import run
    tiny_checkpoint(tmp_path / "m.pt", PREPROCESS)
    tree = _tree(l13, tmp_path / "tree", {"a": MACHU[:1], "Petra": PETRA[:1]})
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        code, output = run(monkeypatch, capsys, "evaluate", "--model", tmp_path / "m.pt", "--folder", tree)
    assert code == 0, output
    line = [x for x in output.splitlines() if x.startswith("warning:")]
    assert line == [f"warning: 1 class folder of {tree} names no landmark the model knows, so its photos can never "
                    f"be answered right: Petra/; name each folder as a landmark of the model (its id or name), or "
                    f"enrol the landmark into an index (landmark index add)"], output
