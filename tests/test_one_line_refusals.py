"""Cases a second adversarial pass found after the merge of issues 9, 10, 11 and 12: each gets one
``error:`` line (exit 2) or a clear exception instead of a traceback or a silent fallback."""
import json

import numpy as np
import pandas as pd
import pytest

from landmark.retrieval.embeddings import Embeddings
from landmark.retrieval.index import IndexParams, LandmarkIndex
from test_reliability import run


def small_index(folder):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    items = pd.DataFrame({"id": [f"i{k}" for k in range(20)], "landmark_id": [str(k % 2) for k in range(20)],
                          "path": [f"/p/{k}.jpg" for k in range(20)]})
    return LandmarkIndex.build(Embeddings(x, items), IndexParams(kind="flat")).save(folder)


def test_a_damaged_index_file_is_named(tmp_path):
    folder = small_index(tmp_path / "idx")
    data = (folder / "index.faiss").read_bytes()
    (folder / "index.faiss").write_bytes(data[:100])
    with pytest.raises(ValueError, match="index.faiss is damaged"):
        LandmarkIndex.load(folder)


def test_a_run_that_lost_its_index_is_refused_not_silently_downgraded(tmp_path):
    from landmark.inference.recognizer import run_index
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    assert run_index(run_dir) is None                       # a run trained without an index
    (run_dir / "reference.json").write_text(json.dumps({"count": 20}))
    with pytest.raises(FileNotFoundError, match="--classifier-only"):
        run_index(run_dir / "checkpoints" / "best.pt")
    small_index(run_dir / "index")
    (run_dir / "index" / "meta.json").unlink()              # unfinished: found, then refused on load
    assert run_index(run_dir) == run_dir / "index"
    with pytest.raises(ValueError, match="unfinished"):
        LandmarkIndex.load(run_index(run_dir))


def test_non_finite_thresholds_are_refused(recognizer_run):
    from landmark import Recognizer
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            Recognizer.load(recognizer_run, threshold=bad)


def test_exclusions_that_name_nothing_or_leave_nothing_are_refused(tmp_path, l13):
    from landmark.config import load_config
    from landmark.training import train
    for excluded, message in ((["99"], "not landmarks"), ([str(k) for k in range(13)], "leaves no landmark")):
        config = load_config("fast", {"data": {"exclude_landmarks": excluded}})
        with pytest.raises(ValueError, match=message):
            train(config, l13, tmp_path / "run")
        assert not (tmp_path / "run").exists()


def test_contradictory_or_misplaced_arguments_get_one_line(monkeypatch, capsys, tmp_path, recognizer_run):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [
        (("predict", recognizer_run, "--images", photo, "--classifier-only", "--index", tmp_path), "contradict"),
        (("train", "--data", tmp_path, "--out", tmp_path / "r", "--nonlandmarks", tmp_path / "empty"), "empty"),
        (("recognize", tmp_path / "empty", "--model", recognizer_run), "is a folder"),
        (("recognize", photo, "--model", recognizer_run, "--explain", tmp_path / "afile"), "is a file"),
        (("export", recognizer_run / "checkpoints" / "best.pt", "--out", tmp_path / "empty"), "is a folder"),
    ]
    for args, message in cases:
        code, out = run(monkeypatch, capsys, *args)
        assert code == 2 and out.startswith("error:") and message in out and "Traceback" not in out, (args, out)


def test_an_export_in_the_run_folder_finds_the_run_index(tmp_path):
    from landmark.inference.recognizer import run_index
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    small_index(run_dir / "index")
    for model in (run_dir / "model.onnx", run_dir / "checkpoints" / "best.pt", run_dir):
        model.touch() if model.suffix else None
        assert run_index(model) == run_dir / "index"


def test_an_index_of_another_image_size_is_refused(tmp_path, recognizer_run):
    """One forward pass gives the logits and the embedding, so the index must be at the model's size."""
    from landmark import Recognizer
    folder = small_index(tmp_path / "idx")
    index = LandmarkIndex.load(folder)
    index.meta["model"] = {"image_size": 999}
    with pytest.raises(ValueError, match="999 px"):
        Recognizer.load(recognizer_run, index=index)
