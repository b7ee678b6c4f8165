"""landmark report on every preset's run: a run without a test split (the fast preset's) is reported
on its validation photos, said so; one-epoch curves are readable; charts name the classes."""
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
