"""End to end on real photos: train (stages, rejects, resume, determinism), predict, evaluate, CLI."""
import json
import os

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from conftest import DIRTY
from landmark.config import load_config
from landmark.data import image_path, read_train
from landmark.reporting.charts import write_training_curves
from landmark.training import RunExistsError, resume, train
from landmark.training import trainer as trainer_module

pytestmark = pytest.mark.slow

TINY = {
    "seed": 3,
    "data": {"cache_width": 128, "batch_size": 8, "workers": 0, "val_frac": 0.25, "test_frac": 0.125,
             "final_fit": False},
    "augment": {"rotation": 5},
    "stages": [
        {"name": "head", "epochs": 1, "lr": 1e-3, "freeze": -1,
         "crop": {"p_start": 0.5, "p_end": 0.5, "resize": 72, "size": 64, "mode": "random"}},
        {"name": "top", "epochs": 1, "lr": 1e-4, "freeze": 90,
         "crop": {"p_start": 0.5, "p_end": 0.8, "resize": 80, "size": 64, "mode": "corners"}},
    ],
}


@pytest.fixture(scope="module")
def tree(l13, tmp_path_factory):
    """3 landmarks x 8 real photos as a folder-per-class tree (symlinks), plus 2 unreadable files."""
    root = tmp_path_factory.mktemp("tree")
    frame = read_train(l13)
    for lid in ("0", "4", "7"):
        (root / lid).mkdir()
        for image_id in frame[frame["landmark_id"] == lid]["id"].iloc[:8]:
            os.symlink(image_path(l13, image_id), root / lid / f"{image_id}.jpg")
    os.symlink(DIRTY / "synthetic_truncated_half.jpg", root / "0" / "broken.jpg")
    os.symlink(DIRTY / "synthetic_html_page.jpg", root / "7" / "html.jpg")
    return root


def final_weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["state_dict"]


def test_train_writes_everything_and_reports_rejects(tree, tmp_path):
    run = tmp_path / "run"
    epochs_seen = []

    def draw_curves(run_dir):  # the epoch hook `landmark train` fills with the curve drawing
        epochs_seen.append(len(pd.read_csv(run_dir / "metrics.csv")))
        write_training_curves(run_dir)

    best = train(load_config("fast", TINY), tree, run, on_epoch_end=draw_curves)
    assert best == run / "checkpoints" / "best.pt" and best.is_file()
    assert epochs_seen == [1, 2]  # after each epoch, with that epoch's metrics written
    for name in ("config.yaml", "split.csv", "split_summary.json", "metrics.csv", "metrics.json", "curves.png",
                 "rejects.csv", "test_metrics.json", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["stage"].tolist() == ["head", "top"]
    assert metrics["frozen_layers"].tolist() == [98, 90]
    assert metrics["crop_p"].tolist() == [0.5, 0.5]
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "train_gap", "val_gap"} <= set(metrics)
    rejects = pd.read_csv(run / "rejects.csv")
    assert set(rejects["id"]) == {"broken", "html"}
    assert rejects["reason"].str.contains("truncated").any() and rejects["reason"].str.contains("not an image").any()
    split = pd.read_csv(run / "split.csv", dtype=str)
    assert len(split) == 26 and set(split["split"]) == {"train", "val", "test"}
    # a folder tree's landmarks are named by their folders; the names travel in the checkpoint
    assert torch.load(best, weights_only=False)["names"] == {"0": "0", "4": "4", "7": "7"}
    with pytest.raises(RunExistsError):
        train(load_config("fast", TINY), tree, run)  # never overwrites a run


def test_resume_after_interruption_equals_uninterrupted_run(tree, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(load_config("fast", TINY), tree, straight)
    again = tmp_path / "again"
    train(load_config("fast", TINY), tree, again)
    for key, value in final_weights(straight).items():
        assert torch.equal(value, final_weights(again)[key]), f"same seed, different {key}"

    interrupted = tmp_path / "interrupted"
    original = trainer_module._write_history

    def crash_after_first_epoch(history, run_dir):
        original(history, run_dir)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "_write_history", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(load_config("fast", TINY), tree, interrupted)
    monkeypatch.setattr(trainer_module, "_write_history", original)
    assert len(pd.read_csv(interrupted / "metrics.csv")) == 1
    resume(interrupted)
    assert len(pd.read_csv(interrupted / "metrics.csv")) == 2
    for key, value in final_weights(straight).items():
        assert torch.equal(value, final_weights(interrupted)[key]), f"resumed run differs in {key}"


def test_cli_train_predict_evaluate_on_real_test_photos(tree, l13, tmp_path):
    from landmark.cli import app
    runner = CliRunner()
    run = tmp_path / "cli_run"
    config = tmp_path / "tiny.yaml"
    import yaml
    config.write_text(yaml.safe_dump(TINY))
    result = runner.invoke(app, ["train", "--data", str(tree), "--config", str(config), "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "curves.png").is_file()  # drawn by the CLI's epoch hook, not by train()
    # no --nonlandmarks: the last lines say how the threshold was chosen, its value, and that it rests on few photos
    method = json.loads((run / "reference.json").read_text())["threshold_method"]
    *_, how, warning = result.stdout.strip().splitlines()
    assert how.startswith(f"no-landmark threshold {method['reference']:.4g} (reference score")
    assert f"without --nonlandmarks, by leave-class-out on {method['validation_photos']} validation photos" in how
    assert warning.startswith(f"warning: the no-landmark threshold rests on only {method['validation_photos']} "
                              f"validation photos (fewer than 50)")
    # queries: 6 landmark photos of the 3 trained classes, 2 distractors, 1 unreadable file
    solution = pd.read_csv(l13 / "test" / "recognition_solution.csv", dtype=str, keep_default_na=False)
    picked = pd.concat([solution[solution["landmarks"] == lid].head(2) for lid in ("0", "4", "7")]
                       + [solution[solution["landmarks"] == ""].head(2)])
    queries = tmp_path / "queries"
    queries.mkdir()
    for image_id in picked["id"]:
        os.symlink(image_path(l13, image_id, "test"), queries / f"{image_id}.jpg")
    os.symlink(DIRTY / "synthetic_zero_bytes.jpg", queries / "empty.jpg")
    picked[["id", "landmarks", "Usage"]].to_csv(tmp_path / "solution.csv", index=False)
    for tta in ("1", "10"):
        sub = tmp_path / f"sub{tta}.csv"
        result = runner.invoke(app, ["predict", str(run / "checkpoints" / "best.pt"), "--images", str(queries),
                                     "--out", str(sub), "--tta", tta, "--workers", "0"])
        assert result.exit_code == 0, result.output
        rows = pd.read_csv(sub, dtype=str, keep_default_na=False)
        assert len(rows) == 9 and rows.set_index("id").loc["empty", "landmarks"] == ""
        assert (rows["landmarks"].str.split().str.len() == 2).sum() == 8
        assert pd.read_csv(tmp_path / f"sub{tta}.rejects.csv")["id"].tolist() == ["empty"]
        result = runner.invoke(app, ["evaluate", str(sub), "--solution", str(tmp_path / "solution.csv"),
                                     "--out", str(tmp_path / f"eval{tta}")])
        assert result.exit_code == 0, result.output
        metrics = json.loads(result.output)
        assert metrics["landmark_queries"] == 6 and 0 <= metrics["gap"] <= metrics["gap_landmarks_only"] <= 1
        assert (tmp_path / f"eval{tta}" / "per_class_accuracy.png").is_file()
    # an existing output is not overwritten without --overwrite
    result = runner.invoke(app, ["predict", str(run / "checkpoints" / "best.pt"), "--images", str(queries),
                                 "--out", str(tmp_path / "sub1.csv")])
    assert result.exit_code == 2 and "--overwrite" in result.output


def test_bad_config_gives_a_clear_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - epochs: 0\n    crop: {resize: 100, size: 150}\n")
    with pytest.raises(ValueError) as err:
        load_config(bad)
    assert "stages.0.epochs" in str(err.value) and "resize" in str(err.value)
    with pytest.raises(FileNotFoundError, match="preset"):
        load_config("no_such_preset")


def test_ddp_two_processes_gloo(tree, tmp_path):
    """torchrun with 2 CPU processes (gloo): every train image is seen once per epoch across ranks."""
    import subprocess
    import sys

    import yaml
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "stages": TINY["stages"][:1]}))
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "landmark.cli", "train", "--data", str(tree), "--config", str(config),
                             "--out", str(run)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best_checkpoint") == 1  # rank 0 alone reports
    metrics = pd.read_csv(run / "metrics.csv")
    split = pd.read_csv(run / "split.csv", dtype=str)
    rejects = set(pd.read_csv(run / "rejects.csv")["id"])
    assert rejects == {"broken", "html"}
    n_train = int(((split["split"] == "train") & ~split["id"].isin(rejects)).sum())
    assert metrics["train_images"].tolist() == [n_train]
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "test_metrics.json").is_file()
