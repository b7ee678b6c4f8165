"""landmark stats: hand-computed figures on a small tree, and the real landmarks13 set."""
import json
import shutil

import numpy as np
import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from landmark.cli import app
from landmark.data.dataset_stats import category_name, class_count_stats, dataset_stats


def test_class_count_stats_by_hand():
    counts = pd.Series([1, 1, 3, 5, 9, 10, 120] + [2] * 93)     # 100 classes
    s = class_count_stats(counts)
    assert s["classes"] == 100 and s["images"] == 1 + 1 + 3 + 5 + 9 + 10 + 120 + 186
    assert s["images_per_class"]["min"] == 1 and s["images_per_class"]["max"] == 120
    assert s["images_per_class"]["median"] == 2.0
    assert s["classes_by_size"] == {"1": {"classes": 2, "images": 2}, "2-4": {"classes": 94, "images": 189},
                                    "5-9": {"classes": 2, "images": 14}, "10+": {"classes": 2, "images": 130}}
    assert s["top1pct"] == {"classes": 1, "images": 120, "share": round(120 / 335, 4)}


def test_category_name():
    assert category_name("http://commons.wikimedia.org/wiki/Category:Alhambra_Palace") == "Alhambra Palace"
    assert category_name("https://commons.wikimedia.org/wiki/Category:Caf%C3%A9_de_Flore") == "Café de Flore"
    assert category_name("Taj Mahal") == "Taj Mahal"


def write_jpeg(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).resize((128, 96), Image.Resampling.NEAREST).save(path, "JPEG", quality=90)


def test_tree_duplicates_and_unreadable(tmp_path):
    root = tmp_path / "tree"
    for k in range(5):
        write_jpeg(root / "A" / f"a{k}.jpg", k)
    write_jpeg(root / "B" / "b0.jpg", 10)
    shutil.copy(root / "A" / "a0.jpg", root / "B" / "b1.jpg")       # same bytes, other class
    write_jpeg(root / "C" / "c0.jpg", 20)
    (root / "C" / "c1.jpg").write_text("<html>403</html>")           # not an image
    write_jpeg(root / "D" / "d0.jpg", 30)
    summary, tables = dataset_stats(root, near_duplicates=True, workers=2, progress=False)
    assert (summary["images"], summary["classes"]) == (10, 4)
    assert summary["classes_by_size"]["1"] == {"classes": 1, "images": 1}
    assert summary["classes_by_size"]["2-4"] == {"classes": 2, "images": 4}
    assert summary["classes_by_size"]["5-9"] == {"classes": 1, "images": 5}
    assert summary["images_per_class"]["median"] == 2.0 and summary["images_per_class"]["mean"] == 2.5
    assert summary["top1pct"] == {"classes": 1, "images": 5, "share": 0.5}
    assert summary["duplicates"] == {"groups": 1, "files": 2, "redundant": 1, "cross_class_groups": 1}
    assert summary["near_duplicates"]["groups"] >= 1                  # the byte copy at least
    assert summary["unreadable"]["files"] == 1
    bad = tables["unreadable"].iloc[0]
    assert (bad["id"], bad["landmark_id"]) == ("c1", "C") and bad["reason"].startswith("not an image")
    dup = tables["duplicates"][tables["duplicates"]["kind"] == "same bytes"]
    assert sorted(dup["id"]) == ["a0", "b1"]
    assert list(tables["class_counts"]["landmark_id"]) == ["A", "B", "C", "D"]


def test_cli_stats_on_landmarks13(tmp_path, l13):
    out = tmp_path / "stats"
    result = CliRunner().invoke(app, ["stats", str(l13), "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "stats.json").read_text())
    assert (summary["images"], summary["classes"]) == (720, 13)
    assert summary["images_per_class"]["max"] == 91 and summary["images_per_class"]["min"] == 31
    assert summary["classes_by_size"]["10+"] == {"classes": 13, "images": 720}
    assert summary["duplicates"]["groups"] == 0 and summary["unreadable"]["files"] == 0
    counts = pd.read_csv(out / "class_counts.csv")
    assert counts.iloc[0].to_dict() == {"landmark_id": 8, "name": "Hagia Sophia", "images": 91}
    for png in ("class_frequency.png", "count_distribution.png"):
        with Image.open(out / png) as img:
            assert img.format == "PNG" and img.width >= 800
    assert (out / "stats.md").read_text().count("Hagia Sophia") == 1  # 13 classes: each listed once
    again = CliRunner().invoke(app, ["stats", str(l13), "--out", str(out), "--no-images"])
    assert again.exit_code == 2 and "--overwrite" in again.output
