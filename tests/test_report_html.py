"""End to end: a tiny synthetic run folder -> landmark report -> the page rendered in headless
Chromium without broken images or script errors; and the saliency command."""
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

os.environ["HF_HUB_OFFLINE"] = "1"

from landmark.cli import app  # noqa: E402
from landmark.data import image_path  # noqa: E402
from landmark.models import create_model, save_checkpoint  # noqa: E402
from landmark.reporting.report import build_report  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CLASSES = ["3", "7", "12"]  # Cologne Cathedral, Great Pyramid of Giza, Taj Mahal


def make_run(root: Path, data: Path) -> Path:
    """A run folder as landmark train writes it, built in ~2 s: 4 train, 1 val and 2 test
    photos per class from landmarks13, a real ImageNet backbone with a random 3-class head."""
    run = root / "run"
    train = pd.read_csv(data / "train.csv", dtype=str, keep_default_na=False)
    rows = []
    for lid in CLASSES:
        ids = sorted(train.loc[train["landmark_id"] == lid, "id"])[:7]
        rows += [(i, lid, s) for i, s in zip(ids, ["train"] * 4 + ["val"] + ["test"] * 2)]
    run.mkdir(parents=True)
    pd.DataFrame(rows, columns=["id", "landmark_id", "split"]).to_csv(run / "split.csv", index=False)
    pd.DataFrame({"epoch": [1, 2, 3], "stage": ["head", "finetune", "finetune"], "train_loss": [1.0, 0.8, 0.6],
                  "val_loss": [1.1, 0.9, 0.95], "train_accuracy": [0.4, 0.6, 0.7], "val_accuracy": [0.3, 0.5, 0.5],
                  "train_gap": [0.3, 0.5, 0.6], "val_gap": [0.2, 0.45, 0.4]}).to_csv(run / "metrics.csv", index=False)
    (run / "run.json").write_text(json.dumps({"data": str(data)}))
    pd.DataFrame({"id": ["deadbeef"], "path": ["x.jpg"], "reason": ["empty file"]}).to_csv(run / "rejects.csv",
                                                                                            index=False)
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", len(CLASSES), weights="imagenet")
    save_checkpoint(run / "checkpoints" / "best.pt", model, CLASSES,
                    preprocess={"size": 96, "resize": 110, "mean": model.arch["mean"], "std": model.arch["std"]})
    return run


@pytest.fixture(scope="module")
def report(l13, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    run = make_run(root, l13)
    result = build_report(run, root / "out", samples=2, tta=2, batch_size=8, workers=0, device="cpu")
    return run, root / "out", result


@pytest.mark.slow
def test_report_files_and_numbers(report):
    run, out, result = report
    for name in ("report.html", "report.json", "training_curves.png", "class_distribution.png",
                 "per_class_accuracy.png", "accuracy_vs_train_images.png", "confused_pairs.png", "confidence.png",
                 "imagenet_top3.png", "saliency.png", "predictions_tta1.csv", "predictions_tta2.csv",
                 "per_class_accuracy.csv", "rejects.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert result["evaluation_set"].startswith("held-out split")
    assert result["queries"] == {"all": 6, "landmark": 6}  # 2 test photos x 3 classes
    assert result["rejects"] == {"training": 1, "evaluation": 0}
    preds = pd.read_csv(out / "predictions_tta1.csv", dtype=str)
    split = pd.read_csv(run / "split.csv", dtype=str)
    truth = dict(zip(split["id"], split["landmark_id"]))
    acc = sum(truth[i] == p for i, p in zip(preds["id"], preds["landmark_id"])) / 6
    assert result["metrics"]["tta1"]["accuracy"] == pytest.approx(acc)
    per_class = pd.read_csv(out / "per_class_accuracy.csv", dtype={"landmark_id": str})
    assert sorted(per_class["landmark_id"]) == sorted(CLASSES) and set(per_class["train_images"]) == {4}
    assert per_class["correct"].sum() == round(acc * 6)
    assert set(per_class["name"]) == {"Cologne Cathedral", "Great Pyramid Of Giza", "Taj Mahal"}
    assert len(result["imagenet_top3"]) == 2 and all(len(v) == 3 for v in result["imagenet_top3"].values())
    html = (out / "report.html").read_text()
    assert "<script" not in html and 'src="http' not in html and html.count('src="data:image/png;base64,') >= 9


@pytest.mark.slow
def test_report_renders_in_chromium(report):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: apt-get install -y chromium chromium-driver")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    _, out, _ = report
    errors, requests = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
        page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}")
                if msg.type in ("error", "warning") else None)
        page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
        page.on("request", lambda req: requests.append(req.url))
        page.goto((out / "report.html").resolve().as_uri(), wait_until="load")
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
        shot = out / "report_screenshot.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert len(images) >= 9
    broken = [alt for alt, complete, width in images if not complete or width == 0]
    assert broken == []
    assert all(u.startswith(("file:", "data:")) for u in requests)  # nothing from the network
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("LANDMARK_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report_screenshot.png")


def test_report_refuses_non_empty_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_report(tmp_path, out)
    assert (out / "mine.txt").read_text() == "keep me"


@pytest.mark.slow
def test_saliency_command(report, tmp_path, l13):
    run, _, _ = report
    photo = image_path(l13, pd.read_csv(run / "split.csv", dtype=str)["id"].iloc[0])
    bad = l13.parent / "dirty" / "synthetic_zero_bytes.jpg"
    runner = CliRunner()
    result = runner.invoke(app, ["saliency", str(run / "checkpoints" / "best.pt"), str(photo), str(bad),
                                 "--out", str(tmp_path / "sal")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sal" / f"{photo.stem}.saliency.png").stat().st_size > 10_000
    table = pd.read_csv(tmp_path / "sal" / "saliency.csv", dtype={"predicted": str})
    assert len(table) == 1 and table["predicted"].iloc[0] in CLASSES
    rejects = pd.read_csv(tmp_path / "sal" / "rejects.csv")
    assert rejects["reason"].tolist() == ["empty file"]
    again = runner.invoke(app, ["saliency", str(run / "checkpoints" / "best.pt"), str(photo),
                                "--out", str(tmp_path / "sal")])
    assert again.exit_code == 2 and "exists" in again.output


def test_cli_report_passes_keywords(monkeypatch, tmp_path):
    """Every option reaches build_report by name (a reordered signature cannot swap two)."""
    import landmark.reporting.report as report_module
    seen = {}

    def fake(run_dir, out, *, images, solution, checkpoint, samples, tta, batch_size, workers, device, overwrite):
        seen.update(images=images, samples=samples, tta=tta, batch_size=batch_size, workers=workers)
        return {"html": str(out / "report.html"), "rejects": {}}

    monkeypatch.setattr(report_module, "build_report", fake)
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "out"), "--samples", "3",
                                      "--tta", "4", "--batch-size", "5", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert seen == {"images": None, "samples": 3, "tta": 4, "batch_size": 5, "workers": 1}


def test_example_files_of_odd_landmark_ids_stay_in_the_report_folder(tmp_path, monkeypatch):
    """A solution CSV's landmark ids become file names: '../../pwn' ended a whole report at its last
    section ('No such file or directory: .../examples_worst_../../pwn.png'); a 300-character id
    is over the file-name limit. Each is now one file inside the folder."""
    from types import SimpleNamespace

    from landmark.reporting import report
    from landmark.reporting.html import Page
    written = []

    def plot(queries, lid, names, path):
        path.write_bytes(b"png")   # where the grid would be drawn
        written.append(path)
    monkeypatch.setattr(report.photo_grids, "plot_class_examples", plot)
    odd = ["../../pwn", "a/b", "x" * 300, "Sacré-Cœur"]
    data = SimpleNamespace(accuracy=SimpleNamespace(worst=odd + ["11"], near_50=["0f3a"]), queries=None, names={})
    report._examples_section(Page("t"), data, tmp_path)
    assert len(written) == 6 and all(p.parent == tmp_path and p.is_file() for p in written)
    assert [p.name for p in written[-2:]] == ["examples_worst_11.png", "examples_near50_0f3a.png"]
    assert len({p.name for p in written}) == 6 and all(len(p.name) < 80 for p in written)
    assert report.file_part("../../pwn").startswith("pwn-") and report.file_part("Petra_Jordan") == "Petra_Jordan"
