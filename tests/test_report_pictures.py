"""Analysis pictures at any class count (issue 12): named bars for few classes, a histogram
for many, no overlapping most/least lists, no empty panels, no class twice in the samples."""
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from PIL import Image

from landmark.data.dataset_stats import stats_markdown
from landmark.reporting.analysis import pick_classes
from landmark.reporting.charts import (NAMED_BARS_MAX, plot_accuracy_by_class, plot_accuracy_vs_count, plot_class_frequency,
                                       plot_per_class_accuracy)
from landmark.reporting.photo_grids import Tile, plot_tile_rows
from landmark.reporting.report_data import pick_samples

NAMES = {"1": "Taj Mahal", "2": "Eiffel Tower", "3": "Big Ben", "4": "Colosseum", "5": "Petra"}
NAN_STATS = {"pearson": float("nan"), "pearson_p": float("nan"), "spearman": float("nan"),
             "spearman_p": float("nan")}


def _per_class(n: int) -> pd.DataFrame:
    acc = np.linspace(0, 1, n)
    return pd.DataFrame({"landmark_id": [str(i + 1) for i in range(n)], "queries": 4,
                         "correct": np.round(acc * 4).astype(int), "accuracy": acc})


def _bars(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_per_class_accuracy_named_bars_for_few_classes(tmp_path):
    table = _per_class(5).iloc[::-1]  # any order in, lowest accuracy first out
    fig = plot_per_class_accuracy(table, tmp_path / "pc.png", NAMES)
    ax = fig.axes[0]
    assert len(_bars(ax)) == 5
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "1 Taj Mahal", "2 Eiffel Tower", "3 Big Ben", "4 Colosseum", "5 Petra"]
    assert {t.get_text().strip() for t in ax.texts} == {"0%", "25%", "50%", "75%", "100%"}
    assert (tmp_path / "pc.png").stat().st_size > 0
    # without names: the ids
    ax = plot_per_class_accuracy(table, None).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "2", "3", "4", "5"]


def test_per_class_accuracy_histogram_for_many_classes():
    assert NAMED_BARS_MAX < 200
    ax = plot_per_class_accuracy(_per_class(200), None).axes[0]
    assert len(_bars(ax)) == 10  # the ten accuracy bins
    assert ax.get_xlabel() == "per-class accuracy" and sum(p.get_height() for p in _bars(ax)) == 200
    assert len(_bars(plot_per_class_accuracy(_per_class(NAMED_BARS_MAX), None).axes[0])) == NAMED_BARS_MAX


def _class_counts(n: int) -> pd.DataFrame:
    return pd.DataFrame({"landmark_id": [str(i) for i in range(n)], "name": "",
                         "images": list(range(10 * n, 0, -10))})


def _ids(md: str, heading: str) -> list[str]:
    part = md.split(f"## {heading}")[1].split("\n## ")[0]
    return [line.split("|")[1].strip() for line in part.splitlines() if line.startswith("| ")][1:]


def test_stats_lists_never_share_a_class():
    summary = {"root": "x", "layout": "folder tree", "images": 150, "classes": 5,
               "images_per_class": {k: 1 for k in ("min", "q10", "q25", "median", "mean", "q75", "q90", "q99", "max")},
               "classes_by_size": {}, "top1pct": {"classes": 1, "images": 50, "share": 0.33}}
    md = stats_markdown(summary, _class_counts(5), [], top=3)
    assert "Least frequent" not in md and _ids(md, "Classes") == ["0", "1", "2", "3", "4"]
    md = stats_markdown(summary, _class_counts(25), [], top=10)
    most, least = _ids(md, "Most frequent classes"), _ids(md, "Least frequent classes")
    assert len(most) == len(least) == 10 and not set(most) & set(least)
    # the picture: one panel holding each class once
    fig = plot_class_frequency(_class_counts(5), None, n=20)
    assert len(fig.axes) == 1 and len(fig.axes[0].get_yticklabels()) == 5
    fig = plot_class_frequency(_class_counts(50), None, n=20)
    left, right = ({t.get_text() for t in ax.get_yticklabels()} for ax in fig.axes)
    assert len(left) == len(right) == 20 and not left & right


def _joined(n: int, train, acc) -> pd.DataFrame:
    return pd.DataFrame({"landmark_id": [str(i + 1) for i in range(n)], "queries": 2, "correct": 1,
                         "accuracy": acc, "train_images": train})


def test_accuracy_vs_count_labels_and_skip(tmp_path):
    # 5 classes, three of them on the same spot (100 %, 4 images): one shared label there
    table = _joined(5, [4, 4, 4, 8, 2], [1.0, 1.0, 1.0, 0.5, 0.0])
    ax = plot_accuracy_vs_count(table, NAN_STATS, NAMES, tmp_path / "a.png").axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 3 and "1 Taj Mahal, 2 Eiffel Tower, 3 Big Ben" in texts
    assert len({t.xyann for t in ax.texts}) > 1  # neighbours get different offsets
    many = _joined(40, list(range(40)), np.linspace(0, 1, 40))
    assert len(plot_accuracy_vs_count(many, NAN_STATS, {}, None).axes[0].texts) == 0
    assert plot_accuracy_vs_count(_joined(2, [1, 2], [0.0, 1.0]), NAN_STATS, {}, tmp_path / "b.png") is None
    assert not (tmp_path / "b.png").exists()


def test_tile_rows_leave_out_empty_rows(tmp_path):
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (64, 48), (120, 80, 40)).save(photo)
    tiles = [Tile(str(photo), "ok")]
    plot_tile_rows([("correct (1)", tiles), ("misclassified (0)", [])], tmp_path / "one.png")
    plot_tile_rows([("correct (1)", tiles), ("misclassified (1)", tiles)], tmp_path / "two.png")
    one, two = Image.open(tmp_path / "one.png").size, Image.open(tmp_path / "two.png").size
    assert one[0] == two[0] and one[1] < 0.6 * two[1]  # one row of photos, not a blank half
    assert plot_tile_rows([("no confusions", [])], tmp_path / "none.png") == 0
    assert Image.open(tmp_path / "none.png").size[1] < one[1]


def test_near_50_classes_exclude_perfect_ones():
    per_class = pd.DataFrame({"landmark_id": list("abcde"), "queries": 2, "correct": [0, 1, 2, 2, 2],
                              "accuracy": [0.0, 0.5, 1.0, 1.0, 1.0]})
    worst, middle = pick_classes(per_class)
    assert worst == ["a", "b", "c"] and middle == []


def test_samples_never_show_a_class_twice():
    table = pd.DataFrame({"id": [f"q{i}" for i in range(8)], "path": "",
                          "truth": ["1", "1", "2", "2", "3", "", "1", ""],
                          "landmark_id": ["1", "2", "2", "2", "3", "1", "1", ""], "score": 0.5,
                          "correct": False})
    sample = pick_samples(table, 6)
    landmark = sample[sample["truth"] != ""]
    assert list(landmark["truth"]) == ["1", "2", "3"] and list(sample["id"]) == ["q0", "q2", "q4", "q5"]
    no_truth = table.assign(truth="")
    assert list(pick_samples(no_truth, 6)["landmark_id"]) == ["1", "2", "3"]


def test_accuracy_by_class_names_every_class_at_52(tmp_path):
    # 52 classes, ordered by training photos (most at the top), every one named with its photo count
    table = _joined(52, [3 + k for k in range(52)], np.linspace(0, 1, 52))
    names = {str(k + 1): f"Landmark {k + 1}" for k in range(52)}
    groups = {str(k + 1): "a" if k < 13 else "b" for k in range(52)}
    stats = {"pearson": 0.5, "pearson_p": 0.001, "spearman": 0.4, "spearman_p": 0.01}
    ax = plot_accuracy_by_class(table, stats, names, tmp_path / "c.png", groups=groups).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 52 and labels[0] == "52 Landmark 52 (54)" and labels[-1] == "1 Landmark 1 (3)"
    assert len(_bars(ax)) == 52 and [t.get_text() for t in ax.get_legend().get_texts()] == ["b", "a"]
    assert "Pearson r = 0.50" in ax.get_title() and "Spearman ρ = 0.40" in ax.get_title()
    assert Image.open(tmp_path / "c.png").size[1] >= 52 * 16   # about 20 px per class at dpi 100
