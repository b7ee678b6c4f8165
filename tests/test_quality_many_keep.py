"""benchmarks/quality_many.py --keep: rows of recipes not run now survive a --write."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality  # noqa: E402
import quality_many as qm  # noqa: E402

TABLE = """intro
<!-- quality:many -->
| recipe | val gap | method | gap |
|---|---|---|---|
| fast | 0.891 | classifier | 0.883 |
| arcface-short (stopped) | 0.754 | epoch 1 | not run |
| fast-320 | 0.5 | classifier | 0.5 |
<!-- /quality:many -->
outro
"""


def test_kept_rows_drop_the_recipes_run_now_and_keep_the_others(tmp_path):
    doc = tmp_path / "q.md"
    doc.write_text(TABLE)
    kept = qm.kept_rows(doc, {"fast-320"})
    assert [r["recipe"] for r in kept] == ["fast", "arcface-short (stopped)"]
    assert kept[0] == {"recipe": "fast", "val gap": "0.891", "method": "classifier", "gap": "0.883"}
    assert [r["recipe"] for r in qm.kept_rows(doc, {"arcface-short"})] == ["fast", "fast-320"]


def test_rows_written_in_recipe_order_with_the_kept_ones(tmp_path):
    doc = tmp_path / "q.md"
    doc.write_text(TABLE)
    new = [{"recipe": "fast-320", "val gap": 0.931, "method": "classifier", "gap": 0.924}]
    rows = sorted(qm.kept_rows(doc, {"fast-320"}) + new, key=qm.recipe_order)
    quality.write_section(doc, "many", quality.markdown(rows))
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n")
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert lines[1:] == ["| fast | 0.891 | classifier | 0.883 |", "| arcface-short (stopped) | 0.754 | epoch 1 | not run |",
                         "| fast-320 | 0.931 | classifier | 0.924 |"]


def test_no_table_keeps_nothing(tmp_path):
    doc = tmp_path / "q.md"
    doc.write_text("no markers\n")
    assert qm.kept_rows(doc, set()) == []


def test_every_recipe_of_the_documented_table_is_regenerated_by_default():
    """``make quality`` runs quality_many.py without ``--recipes`` and without ``--keep``: a recipe
    whose rows docs/quality.md shows but the default leaves out would lose its rows."""
    doc = Path(__file__).resolve().parents[1] / "docs" / "quality.md"
    shown = {r["recipe"].removesuffix(" (stopped)") for r in qm.kept_rows(doc, set())}
    assert {"fast", "arcface-probe", "arcface", "fast-320"} <= shown
    assert shown <= set(qm.TABLE_RECIPES)


def test_finetune_recipes_validate_on_fasts_photos():
    """The fine-tuning recipes read the same photos and split as ``fast`` (train.csv, every class,
    15 % validation, no test split, seed 0), so that their validation GAPs compare: the finetune
    preset's own ``clean: auto`` would read train_clean.csv and ``min_images_per_class: 2`` drop classes."""
    import landmark
    def split(recipe):
        source, overrides = qm.RECIPES[recipe]
        c = landmark.load_config(source, overrides)
        return (c.seed, c.data.clean, c.data.min_images_per_class, c.data.val_frac, c.data.test_frac)
    assert landmark.load_config("finetune").data.clean == "auto"
    assert split("fast") == (0, False, 1, 0.15, 0.0)
    assert split("finetune") == split("fast")
    assert split("finetune-320") == split("fast")
    assert split("finetune-short") == split("fast")
    short = landmark.load_config(*qm.RECIPES["finetune-short"])
    assert [s.epochs for s in short.stages[1:]] == [1]
    assert short.stages[1].model_dump() == {**landmark.load_config("finetune").stages[1].model_dump(), "epochs": 1}
    ft320 = landmark.load_config(*qm.RECIPES["finetune-320"])
    assert (ft320.data.cache_width, ft320.stages[0].crop.size, ft320.stages[1].crop.resize) == (412, 320, 366)
