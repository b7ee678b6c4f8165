"""landmark report on every preset's run: a run without a test split (the fast preset's) is reported
on its validation photos, said so; one-epoch curves are readable; charts name the classes."""
from pathlib import Path

import pandas as pd
import pytest

from landmark.reporting.analysis import label
from landmark.reporting.charts import plot_training_curves


def test_chart_labels_are_names():
    assert label("12", {"12": "Taj Mahal"}) == "12 Taj Mahal"
    assert label("hue_imperial_city", {}) == "Hue Imperial City"             # a folder tree's class
    assert label("hue_imperial_city", {"hue_imperial_city": "hue_imperial_city"}) == "Hue Imperial City"
    assert label("7", {}) == "7"
    assert label("3", {"3": "A very long landmark name indeed"}, width=10) == "3 A very lo…"


def test_one_epoch_curves_are_readable(tmp_path):
    """One epoch: markers on 0..1 (accuracy, GAP) and from 0 (loss), values written beside them,
    whole epochs on the axis (the fast preset's curves.png was three dots on 0.96..1.04)."""
    history = pd.DataFrame({"epoch": [1], "stage": ["probe"], "train_loss": [0.107], "val_loss": [0.765],
                            "train_accuracy": [1.0], "val_accuracy": [0.856], "train_gap": [1.0], "val_gap": [0.84]})
    fig = plot_training_curves(history, tmp_path / "curves.png")
    loss, acc, gap = fig.axes
    assert acc.get_ylim() == (0, 1.05) and gap.get_ylim() == (0, 1.05)
    assert loss.get_ylim()[0] == 0 and loss.get_ylim()[1] == pytest.approx(0.765 * 1.15)
    assert acc.get_xlim() == (0.5, 1.5) and list(acc.get_xticks()) == [1]
    assert {t.get_text() for t in acc.texts} == {"1.000", "0.856"}
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    many = pd.concat([history.assign(epoch=e) for e in range(1, 7)], ignore_index=True)
    assert not plot_training_curves(many).axes[1].texts   # longer curves speak for themselves


@pytest.mark.slow
def test_report_without_a_test_split_uses_the_validation_photos(l13, tmp_path):
    from test_report_html import make_run

    from landmark.reporting.report import build_report
    run = make_run(tmp_path, l13)
    split = pd.read_csv(run / "split.csv", dtype=str)
    split.loc[split["split"] == "test", "split"] = "train"       # as the fast preset keeps none
    split.to_csv(run / "split.csv", index=False)
    result = build_report(run, tmp_path / "out", samples=1, tta=2, batch_size=8, workers=0, device="cpu")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "validation photos of the run (3 images" in html
    assert result["metrics"] is not None


def _tree(l13, root):
    """A labelled folder tree of real landmarks13 test photos: 'Cologne Cathedral' (landmark 3 by
    its name), '7' (by its id), 'no_landmark' (2 non-landmark photos), 'Somewhere Else' (unknown)."""
    from landmark.data import image_path
    solution = pd.read_csv(l13 / "test" / "recognition_solution.csv", dtype=str, keep_default_na=False)
    picked = {"Cologne Cathedral": "3", "7": "7", "no_landmark": "", "Somewhere Else": "12"}
    truth = {}
    for folder, lid in picked.items():
        (root / folder).mkdir(parents=True)
        for i in sorted(solution.loc[solution["landmarks"] == lid, "id"])[:2]:
            (root / folder / f"{i}.jpg").symlink_to(image_path(l13, i, "test"))
            truth[f"{folder}/{i}"] = lid if folder != "Somewhere Else" else "Somewhere_Else"
    return truth


def test_a_labelled_folder_tree_given_as_images_is_scored_with_its_labels(l13, tmp_path):
    """report --images TREE reads the tree's labels as evaluate --folder does (one reader):
    folders by landmark name or id, no_landmark/ as no landmark, unknown folders as their own id."""
    from landmark.data.gldv2 import file_ids
    from landmark.reporting.analysis import class_names
    from landmark.reporting.report_data import evaluation_set
    tree = tmp_path / "mine"
    truth = _tree(l13, tree)
    names = {**{lid: None for lid in ("3", "7", "12")}, **class_names(l13)}
    found = evaluation_set(None, None, images=tree, names=names)
    ids = dict(zip(found.queries["path"].map(lambda p: str(Path(p).relative_to(tree).with_suffix(""))),
                   found.queries["id"]))
    assert {k: found.solution[ids[k]] for k in truth} == {k: ({v} if v else set()) for k, v in truth.items()}
    assert "labelled folder tree: 3 landmark folders, 1 of photos without a landmark; 8 photos" in found.source
    assert set(found.queries["id"]) == set(file_ids([Path(p) for p in found.queries["path"]], tree))
    # the same tree given as --solution, alone or with itself as --images
    again = evaluation_set(None, None, solution=tree, names=names)
    assert again.solution == found.solution
    with pytest.raises(ValueError, match="labels its own photos"):
        evaluation_set(None, None, images=l13 / "test", solution=tree, names=names)
    # a CSV solution beside the photos wins; GLDv2's hexadecimal layout and unnamed folders are unlabelled
    gldv2 = evaluation_set(None, None, images=l13 / "test", names=names)
    assert len(gldv2.solution) == len(pd.read_csv(l13 / "test" / "recognition_solution.csv"))
    hexa = tmp_path / "hexa"
    (hexa / "0" / "0").mkdir(parents=True)
    (hexa / "0" / "0" / "x.jpg").symlink_to(next(iter((tree / "7").iterdir())))
    assert evaluation_set(None, None, images=hexa, names={"0": None}).solution is None
    holidays = tmp_path / "holidays"
    (holidays / "2023 Rome").mkdir(parents=True)
    (holidays / "2023 Rome" / "x.jpg").symlink_to(next(iter((tree / "7").iterdir())))
    assert evaluation_set(None, None, images=holidays, names=names).solution is None


@pytest.mark.slow
def test_report_on_a_labelled_folder_tree_scores_its_labels(l13, tmp_path):
    """The page and report.json score the tree's photos against its folders (not "no ground truth")."""
    import json

    from test_report_html import make_run

    from landmark.reporting.report import build_report
    run = make_run(tmp_path, l13)   # classes 3, 7, 12
    tree = tmp_path / "mine"
    _tree(l13, tree)
    result = build_report(run, tmp_path / "out", images=tree, samples=1, tta=2, batch_size=8, workers=0, device="cpu")
    summary = json.loads((tmp_path / "out" / "report.json").read_text())
    assert summary["queries"] == {"all": 8, "landmark": 6} and result["metrics"] is not None
    assert "labelled folder tree" in summary["evaluation_set"]
    per_class = pd.read_csv(tmp_path / "out" / "per_class_accuracy.csv", dtype=str)
    assert {"3", "7", "Somewhere_Else"} <= set(per_class["landmark_id"])
