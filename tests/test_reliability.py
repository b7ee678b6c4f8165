"""Issue 11, "nothing lost, nothing escapes": each case of the adversarial pass, on real files
made here (tmp_path).  Test names carry the issue's item number."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

import landmark
from _helpers import run
from landmark.config import load_config
from landmark.data import image_path, load_image, read_queries, read_train
from landmark.data.cache import build_cache
from landmark.data.dataset_stats import dataset_stats
from landmark.models import create_model, save_checkpoint

SRC = Path(landmark.__file__).resolve().parents[1]  # the sources under test, also for subprocesses
PRE = {"size": 32, "resize": 40, "mean": [0.5] * 3, "std": [0.5] * 3}
TINY = {
    "seed": 1,
    "data": {"cache_width": 48, "batch_size": 4, "workers": 0, "val_frac": 0.2, "test_frac": 0.0,
             "min_images_per_class": 1, "final_fit": False},
    "model": {"weights": "none"},
    "stages": [{"name": "s", "epochs": 1, "lr": 1e-3, "freeze": 0,
                "crop": {"p_start": 0.0, "p_end": 0.0, "resize": 36, "size": 32}}],
}


def photo(path: Path, seed: int, size=(40, 30), fmt: str | None = None) -> Path:
    """A real image file with random pixels (JPEG unless the suffix or ``fmt`` says otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, fmt or ("PNG" if path.suffix == ".png" else "JPEG"))
    return path



def one_error_line(out: str) -> bool:
    return "Traceback" not in out and sum(line.startswith("error:") for line in out.splitlines()) == 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random-weight 2-class model (32-px input), saved as landmark train would."""
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    torch.manual_seed(0)
    save_checkpoint(path, create_model("tf_efficientnet_lite0", 2, weights="none"), ["a", "b"], preprocess=PRE)
    return path


def gldv2_folder(root: Path, ids_by_class: dict[str, list[str]]) -> Path:
    """A GLDv2 folder: train.csv and one photo per safe id at train/a/b/c/id.jpg."""
    rows = []
    for k, (lid, ids) in enumerate(ids_by_class.items()):
        for j, image_id in enumerate(ids):
            rows.append((image_id, "", lid))
            if 3 <= len(image_id) <= 128 and image_id.replace("_", "").replace("-", "").isalnum():
                photo(image_path(root, image_id), 10 * k + j)
    pd.DataFrame(rows, columns=["id", "url", "landmark_id"]).to_csv(root / "train.csv", index=False)
    return root


# --- 1-4: ids -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_same_and_short_file_names_in_class_folders_all_train(tmp_path):
    """4 classes x 6 photos named alike in every class folder (``1.jpg`` among them): all 24
    are read, split, cached and trained on; ``stats`` and ``embed --data`` see 24 too."""
    from landmark.retrieval.embeddings import labelled_images
    from landmark.training import train
    tree = tmp_path / "tree"
    for c in range(4):
        for k, name in enumerate(["1.jpg", "img001.jpg", "img002.jpg", "IMG002.jpg", "x y.jpg", "x_y.jpg"]):
            photo(tree / str(c) / name, 10 * c + k)
    frame = read_train(tree)
    assert len(frame) == 24 and frame["id"].is_unique and frame["id"].str.lower().is_unique
    assert frame["landmark_id"].value_counts().to_dict() == {"0": 6, "1": 6, "2": 6, "3": 6}
    assert frame["id"].str.fullmatch(r"[0-9A-Za-z_-]+").all()
    summary, _ = dataset_stats(tree, progress=False)
    assert summary["images"] == 24 and summary["classes"] == 4 and summary["unreadable"]["files"] == 0
    assert len(labelled_images(tree)) == 24
    run_dir = train(load_config("fast", TINY), tree, tmp_path / "run").parent.parent
    split = pd.read_csv(run_dir / "split.csv", dtype=str)
    assert len(split) == 24 and split["landmark_id"].nunique() == 4
    assert pd.read_csv(run_dir / "rejects.csv").empty
    assert len(list((run_dir / "cache").rglob("*.jpg"))) == 24


def test_query_folder_with_repeated_names_gives_one_row_per_file(monkeypatch, capsys, tmp_path, checkpoint):
    queries = tmp_path / "q"
    for k, name in enumerate(["a/same.jpg", "b/same.jpg", "same.png", "other.jpg"]):
        photo(queries / name, k)
    frame = read_queries(queries)
    assert len(frame) == 4 and frame["id"].is_unique
    assert frame.set_index("path").loc[str(queries / "other.jpg"), "id"] == "other"
    sub = tmp_path / "sub.csv"
    code, out = run(monkeypatch, capsys, "predict", checkpoint, "--images", queries, "--out", sub, "--workers", 0)
    assert code == 0, out
    rows = pd.read_csv(sub, dtype=str, keep_default_na=False)
    assert len(rows) == 4 and rows["id"].is_unique and (rows["landmarks"] != "").all()
    pd.DataFrame({"id": rows["id"], "landmarks": "a", "Usage": "Public"}).to_csv(tmp_path / "sol.csv", index=False)
    code, out = run(monkeypatch, capsys, "evaluate", sub, "--solution", tmp_path / "sol.csv")
    assert code == 0 and json.loads(out)["queries"] == 4
    # a CSV giving one id two paths is refused rather than losing one of them
    pd.DataFrame({"id": ["q1", "q1"], "path": [str(queries / "same.png"), str(queries / "other.jpg")]}).to_csv(
        tmp_path / "dup.csv", index=False)
    code, out = run(monkeypatch, capsys, "predict", checkpoint, "--images", tmp_path / "dup.csv", "--out",
                    tmp_path / "dup_sub.csv")
    assert code == 2 and one_error_line(out) and "more than one path" in out
    assert not (tmp_path / "dup_sub.csv").exists()


def test_bad_csv_ids_are_rejects_with_a_reason_and_never_paths(tmp_path):
    """GLDv2 ids that are short or path-like: listed with a reason by stats and the cache;
    no file outside the data root is ever read (a photo waits where ``../`` would lead)."""
    data = tmp_path / "data"
    escape = "../../../outside/x"
    bait = photo(tmp_path / "outside" / "x.jpg", 99)  # what image_path(data, escape) used to reach
    gldv2_folder(data, {"1": ["aaa111", "aaa222", "ab"], "2": ["bbb111", escape, "c" * 300]})
    frame = read_train(data)
    assert len(frame) == 6
    reasons = dict(zip(frame["id"], frame["reason"]))
    assert all(reasons[i].startswith("bad id") for i in ("ab", escape, "c" * 300))
    assert reasons["aaa111"] == ""
    summary, tables = dataset_stats(data, progress=False)
    unreadable = tables["unreadable"].set_index("id")
    assert summary["images"] == 6 and summary["unreadable"]["files"] == 3
    assert unreadable.loc["ab", "reason"].startswith("bad id") and unreadable.loc[escape, "path"] == ""
    cached, rejects = build_cache(frame, tmp_path / "cache", 48, root=data, workers=1)
    assert sorted(cached["id"]) == ["aaa111", "aaa222", "bbb111"]
    assert {r.id: r.reason.split(" (")[0] for r in rejects} == {"ab": "bad id", escape: "bad id",
                                                                "c" * 300: "bad id"}
    assert all(r.path == "" for r in rejects if r.id == escape)  # no path was ever built from it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "outside"]
    assert [p.name for p in bait.parent.iterdir()] == ["x.jpg"]  # nothing written beside the bait
    assert all(Path(p).resolve().is_relative_to((tmp_path / "cache").resolve()) for p in cached["path"])
    with pytest.raises(ValueError, match="cannot name a file"):
        image_path(data, escape)
    assert image_path(data, "1") == data / "train" / "1" / "_" / "_" / "1.jpg"


def test_query_csv_ids_are_not_paths(monkeypatch, capsys, tmp_path, checkpoint):
    """A query CSV without a path column: ``../`` ids are rejected with a reason, the photo they
    point at is not read, and the row stays in the submission with no prediction."""
    base = tmp_path / "queries"
    photo(image_path(base, "abc123", "."), 1)
    photo(tmp_path / "secret.jpg", 2)
    escape = "../../../../secret"
    pd.DataFrame({"id": ["abc123", escape, "ab"]}).to_csv(base / "q.csv", index=False)
    sub = tmp_path / "sub.csv"
    code, out = run(monkeypatch, capsys, "predict", checkpoint, "--images", base / "q.csv", "--out", sub,
                    "--workers", 0)
    assert code == 0, out
    rows = pd.read_csv(sub, dtype=str, keep_default_na=False).set_index("id")["landmarks"]
    assert rows["abc123"] != "" and rows[escape] == "" and rows["ab"] == ""
    rejects = pd.read_csv(tmp_path / "sub.rejects.csv", dtype=str, keep_default_na=False).set_index("id")
    assert rejects.loc[escape, "reason"].startswith("bad id") and rejects.loc[escape, "path"] == ""


def test_resume_lists_split_ids_the_data_no_longer_has(tmp_path):
    """A photo renamed or removed between a run and its resume is a reject, not a silent loss."""
    from landmark.config import DataConfig
    from landmark.training.prepare import prepare_data
    for c in range(2):
        for k in range(3):
            photo(tmp_path / "tree" / str(c) / f"p{c}{k}.jpg", 10 * c + k)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = prepare_data(tmp_path / "tree", DataConfig(cache_width=None), 0, run_dir)
    assert sum(len(f) for f in first.frames.values()) == 6 and first.rejects == []
    (tmp_path / "tree" / "1" / "p12.jpg").rename(tmp_path / "tree" / "1" / "renamed.jpg")
    again = prepare_data(tmp_path / "tree", DataConfig(cache_width=None), 0, run_dir)
    assert sum(len(f) for f in again.frames.values()) == 5
    assert [(r.id, r.reason.split(" (")[0]) for r in again.rejects] == [
        ("p12", "in split.csv but no longer in the data folder")]


def test_file_ids_are_unique_and_safe():
    from landmark.data.gldv2 import file_ids
    root = Path("/r")
    files = [root / "0" / "img.jpg", root / "1" / "img.jpg", root / "img.png", root / "A.jpg", root / "a.jpg",
             root / "é ü.jpg", root / "2" / "1.jpg"]
    ids = file_ids(files, root)
    assert len(set(ids)) == len(ids) == len({i.lower() for i in ids})
    assert all(0 < len(i) <= 128 and all(ch.isalnum() and ch.isascii() or ch in "_-" for ch in i) for i in ids)
    assert ids[-1] == "1" and ids[0].startswith("img-") and ids[5] == "___"
    assert file_ids(files, root) == ids  # deterministic


# --- 5-6: one bad row or image fails alone ----------------------------------------------------------

def test_bad_download_rows_fail_alone_and_partial_keeps_user_files(tmp_path):
    from landmark.data.download import DownloadOptions, download_csv
    out = tmp_path / "dl"
    (out / ".partial").mkdir(parents=True)
    (out / ".partial" / "notes.txt").write_text("mine")
    (tmp_path / "rows.csv").write_text("id,url,landmark_id\n"
                                       "v6bad1,http://[::1,1\n"
                                       f"{'d' * 300},http://127.0.0.1:9/x.jpg,1\n"
                                       "port01,http://127.0.0.1:notaport/x.jpg,1\n"
                                       "nohost,http:///x.jpg,1\n"
                                       "refuse,http://127.0.0.1:9/x.jpg,1\n")
    opts = DownloadOptions(workers=2, timeout=1, connect_timeout=1, retries=0, rate_per_host=0)
    report = download_csv(tmp_path / "rows.csv", out, opts, progress=False)
    assert report.rows == 5 and report.failures == 5
    failures = pd.read_csv(out / "download_failures.csv", dtype=str).set_index("id")["reason"]
    assert failures["v6bad1"].startswith("bad url") and failures["d" * 300].startswith("bad id")
    assert failures["port01"].startswith("bad url") and failures["nohost"].startswith("bad url")
    assert failures["refuse"].startswith("connection error")
    assert (out / ".partial" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / ".partial").iterdir()) == ["notes.txt"]


def test_a_strip_jpeg_cannot_hold_is_a_reject_with_its_reason(tmp_path):
    """1 x 100,000 px (over JPEG's 65,500) was cached as PNG; since issue 19 its shape is refused
    from the header (a side over 30,000 px), before decoding or resizing."""
    strip = photo(tmp_path / "strip.png", 3, size=(1, 100_000))
    frame = pd.DataFrame({"id": ["strip"], "landmark_id": ["1"], "path": [str(strip)]})
    cached, rejects = build_cache(frame, tmp_path / "cache", 256, workers=1)
    assert len(cached) == 0 and [r.id for r in rejects] == ["strip"] and "a side over the limit" in rejects[0].reason
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp" in p.name]


# --- 7-9: outputs, locks, interrupted writes ----------------------------------------------------------

def test_every_file_a_command_writes_is_checked_first(monkeypatch, capsys, tmp_path, checkpoint):
    queries = tmp_path / "q"
    photo(queries / "p1.jpg", 1)
    (tmp_path / "mine.rejects.csv").write_text("user data")
    code, out = run(monkeypatch, capsys, "predict", checkpoint, "--images", queries, "--out", tmp_path / "mine.csv")
    assert code == 2 and one_error_line(out) and "mine.rejects.csv" in out
    assert not (tmp_path / "mine.csv").exists() and (tmp_path / "mine.rejects.csv").read_text() == "user data"

    for side in ("x.ids.csv", "x.json"):
        (tmp_path / side).write_text("user data")
        code, out = run(monkeypatch, capsys, "embed", checkpoint, "--images", queries, "--out", tmp_path / "x.npy")
        assert code == 2 and side in out and (tmp_path / side).read_text() == "user data"
        (tmp_path / side).unlink()
    assert not (tmp_path / "x.npy").exists()

    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "items.csv").write_text("user data")
    code, out = run(monkeypatch, capsys, "index", "build", "--checkpoint", checkpoint, "--images", queries,
                    "--label", "a", "--out", idx)
    assert code == 2 and "items.csv" in out and sorted(p.name for p in idx.iterdir()) == ["items.csv"]

    sal = tmp_path / "sal"
    sal.mkdir()
    (sal / "rejects.csv").write_text("user data")
    code, out = run(monkeypatch, capsys, "saliency", checkpoint, queries / "p1.jpg", "--out", sal)
    assert code == 2 and "rejects.csv" in out and sorted(p.name for p in sal.iterdir()) == ["rejects.csv"]

    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "per_class_accuracy.csv").write_text("user data")
    (tmp_path / "s.csv").write_text("id,landmarks\nq1,1 0.5\n")
    (tmp_path / "sol.csv").write_text("id,landmarks\nq1,1\n")
    code, out = run(monkeypatch, capsys, "evaluate", tmp_path / "s.csv", "--solution", tmp_path / "sol.csv",
                    "--out", ev)
    assert code == 2 and "per_class_accuracy.csv" in out
    assert sorted(p.name for p in ev.iterdir()) == ["per_class_accuracy.csv"]


def test_a_run_folder_in_use_is_locked_and_never_inside_the_data(monkeypatch, capsys, tmp_path):
    from landmark.io import LockedError, folder_lock
    from landmark.training import train
    tree = tmp_path / "tree"
    for c in range(2):
        for k in range(3):
            photo(tree / str(c) / f"p{k}.jpg", 10 * c + k)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    with folder_lock(run_dir):  # another train holds the folder
        with pytest.raises(LockedError):
            train(load_config("fast", TINY), tree, run_dir)
        code, out = run(monkeypatch, capsys, "train", "--data", tree, "--config", tmp_path / "tiny.yaml", "--out",
                        run_dir)
        assert code == 2 and one_error_line(out) and "in use by another landmark process" in out
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing of either run was written
    # run folder inside the data tree: refused before anything is written
    code, out = run(monkeypatch, capsys, "train", "--data", tree, "--config", tmp_path / "tiny.yaml", "--out",
                    tree / "runs" / "r1")
    assert code == 2 and one_error_line(out) and "inside --data" in out and not (tree / "runs").exists()


@pytest.mark.slow
def test_interrupted_embed_overwrite_leaves_the_old_embeddings_whole(tmp_path, checkpoint):
    """``embed --overwrite`` killed (SIGKILL) while writing: the finished embeddings stay
    byte for byte, and ``index build`` uses them; a half-committed set is refused."""
    from landmark.retrieval.embeddings import embed_images, load_embeddings
    from landmark.retrieval.index import LandmarkIndex
    from landmark.models import load_model
    few, many = tmp_path / "few", tmp_path / "many"
    for k in range(3):
        photo(few / f"f{k}.jpg", k)
    source = photo(tmp_path / "big.jpg", 7, size=(1600, 1200))
    many.mkdir()
    for k in range(400):
        os.symlink(source, many / f"m{k:03d}.jpg")
    model, ckpt = load_model(checkpoint)
    out = tmp_path / "x.npy"
    embed_images(model, ckpt["preprocess"], read_queries(few).assign(landmark_id="a"), out, workers=0)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("x.*")}
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "landmark.cli", "embed", str(checkpoint), "--images", str(many),
                             "--out", str(out), "--overwrite", "--batch-size", "1", "--workers", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stamp = out.stat().st_mtime_ns

    def writing() -> bool:  # the new array has been started (under a temporary name, or in place)
        return bool(list(tmp_path.glob(".x.npy.tmp*"))) or out.stat().st_mtime_ns != stamp

    deadline = time.monotonic() + 120
    while not writing() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "embed ended before it could be interrupted"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {p.name: p.read_bytes() for p in tmp_path.glob("x.*")} == before
    emb = load_embeddings(out)
    assert len(emb) == 3 and len(LandmarkIndex.build(emb)) == 3
    # the state a kill between two renames would leave: the marker gone, the array new
    (tmp_path / "x.json").unlink()
    with pytest.raises(ValueError, match="unfinished"):
        load_embeddings(out)
    (tmp_path / "x.json").write_bytes(before["x.json"].replace(b'"rows": 3', b'"rows": 5'))
    with pytest.raises(ValueError, match="unfinished"):
        load_embeddings(out)


def test_index_folder_without_its_marker_is_refused(tmp_path, checkpoint):
    from landmark.models import load_model
    from landmark.retrieval.embeddings import embed_images
    from landmark.retrieval.index import LandmarkIndex
    for k in range(3):
        photo(tmp_path / "few" / f"f{k}.jpg", k)
    model, ckpt = load_model(checkpoint)
    emb, _ = embed_images(model, ckpt["preprocess"], read_queries(tmp_path / "few").assign(landmark_id="a"),
                          tmp_path / "e.npy", workers=0)
    LandmarkIndex.build(emb).save(tmp_path / "idx")
    assert len(LandmarkIndex.load(tmp_path / "idx")) == 3
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    (tmp_path / "idx" / "meta.json").write_text(json.dumps({**meta, "count": 2}))  # from an earlier write
    with pytest.raises(ValueError, match="meta.json says 2"):
        LandmarkIndex.load(tmp_path / "idx")
    (tmp_path / "idx" / "meta.json").unlink()
    with pytest.raises(ValueError, match="unfinished index"):
        LandmarkIndex.load(tmp_path / "idx")


# --- 10-11: non-finite numbers, wrong files -------------------------------------------------------------

@pytest.mark.slow
def test_non_finite_settings_losses_and_scores_are_refused(monkeypatch, capsys, tmp_path):
    from landmark.training import train
    from landmark.training.trainer import NonFiniteLossError
    for value in (".inf", ".nan", "-.inf"):
        (tmp_path / "c.yaml").write_text(f"stages:\n  - lr: {value}\n")
        with pytest.raises(ValueError, match="finite"):
            load_config(tmp_path / "c.yaml")
    tree = tmp_path / "tree"
    for c in range(2):
        for k in range(6):
            photo(tree / str(c) / f"p{k}.jpg", 10 * c + k)
    huge = {**TINY, "data": {**TINY["data"], "batch_size": 2, "val_frac": 0.0},
            "stages": [{**TINY["stages"][0], "lr": 1e30}]}
    with pytest.raises(NonFiniteLossError, match="lower the learning rate|Lower the learning rate"):
        train(load_config("fast", huge), tree, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    (tmp_path / "sol.csv").write_text("id,landmarks\nq1,1\nq2,2\n")
    for score in ("nan", "inf", "1e309", "-inf"):
        (tmp_path / "s.csv").write_text(f"id,landmarks\nq1,1 {score}\nq2,2 0.5\n")
        code, out = run(monkeypatch, capsys, "evaluate", tmp_path / "s.csv", "--solution", tmp_path / "sol.csv")
        assert code == 2 and one_error_line(out) and "finite" in out, score


def test_a_model_with_nan_weights_is_refused(monkeypatch, capsys, tmp_path):
    model = create_model("tf_efficientnet_lite0", 2, weights="none")
    save_checkpoint(tmp_path / "nan.pt", model, ["a", "b"], preprocess=PRE)
    ckpt = torch.load(tmp_path / "nan.pt", weights_only=True)   # the writer refuses NaN: put it in by hand
    next(v for k, v in ckpt["state_dict"].items() if k.startswith("head.")).fill_(float("nan"))
    torch.save(ckpt, tmp_path / "nan.pt")
    photo(tmp_path / "q" / "p.jpg", 1)
    code, out = run(monkeypatch, capsys, "predict", tmp_path / "nan.pt", "--images", tmp_path / "q", "--out",
                    tmp_path / "s.csv")
    assert code == 2 and one_error_line(out) and "non-finite weights" in out and not (tmp_path / "s.csv").exists()


def test_wrong_weights_and_checkpoint_files_give_one_error_line(monkeypatch, capsys, tmp_path, checkpoint):
    import timm
    torch.save(timm.create_model("tf_efficientnet_lite2", num_classes=0).state_dict(), tmp_path / "lite2.pth")
    tree = tmp_path / "tree"
    for c in range(2):
        photo(tree / str(c) / "p.jpg", c)
    code, out = run(monkeypatch, capsys, "train", "--data", tree, "--weights", tmp_path / "lite2.pth", "--out",
                    tmp_path / "r")
    assert code == 2 and one_error_line(out) and "another architecture" in out and not (tmp_path / "r").exists()

    ckpt = torch.load(checkpoint, weights_only=False)
    photo(tmp_path / "q" / "p.jpg", 1)
    for name, change, words in (("classes.pt", {"classes": ["a", "b", "c"]}, "lists 3 classes"),
                                ("spec.pt", {"spec": {**ckpt["spec"], "backbone": "tf_efficientnet_lite1"}},
                                 "do not fit its architecture")):
        torch.save({**ckpt, **change}, tmp_path / name)
        code, out = run(monkeypatch, capsys, "predict", tmp_path / name, "--images", tmp_path / "q", "--out",
                        tmp_path / "s.csv")
        assert code == 2 and one_error_line(out) and words in out, out

    # --resume with an empty or truncated last.pt
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(TINY))
    (run_dir / "run.json").write_text(json.dumps({"data": str(tree)}))
    last = run_dir / "checkpoints" / "last.pt"
    for content, words in ((b"", "empty"), (checkpoint.read_bytes()[:5000], "truncated")):
        last.write_bytes(content)
        code, out = run(monkeypatch, capsys, "train", "--resume", run_dir)
        assert code == 2 and one_error_line(out) and words in out and "last.pt" in out, out
        assert "Aborted" not in out


# --- 12: quieter weak spots -------------------------------------------------------------------------------

def test_csv_decoding_errors_name_the_file(monkeypatch, capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_bytes("id,url,landmark_id\nabc,,caf\xe9\n".encode("latin-1"))
    code, out = run(monkeypatch, capsys, "stats", data, "--out", tmp_path / "st")
    assert code == 2 and one_error_line(out) and str(data / "train.csv") in out and "UTF-8" in out
    (tmp_path / "sol.csv").write_bytes("id,landmarks\nq\xe9,1\n".encode("latin-1"))
    (tmp_path / "s.csv").write_text("id,landmarks\nq1,1 0.5\n")
    code, out = run(monkeypatch, capsys, "evaluate", tmp_path / "s.csv", "--solution", tmp_path / "sol.csv")
    assert code == 2 and one_error_line(out) and "sol.csv" in out


def test_evaluate_refuses_a_solution_that_cannot_be_one(monkeypatch, capsys, tmp_path):
    (tmp_path / "s.csv").write_text("id,landmarks\nq1,1 0.9\nq2,2 0.4\n")
    code, out = run(monkeypatch, capsys, "evaluate", tmp_path / "s.csv", "--solution", tmp_path / "s.csv")
    assert code == 2 and one_error_line(out) and "submission itself" in out
    (tmp_path / "copy.csv").write_text("id,landmarks\nq1,1 0.9\nq2,2 0.4\n")
    code, out = run(monkeypatch, capsys, "evaluate", tmp_path / "s.csv", "--solution", tmp_path / "copy.csv")
    assert code == 2 and one_error_line(out) and "looks like a submission" in out
    (tmp_path / "other.csv").write_text("id,landmarks,Usage\nz1,1,Public\nz2,,Public\n")
    code, out = run(monkeypatch, capsys, "evaluate", tmp_path / "s.csv", "--solution", tmp_path / "other.csv")
    assert code == 2 and one_error_line(out) and "no id of" in out
    (tmp_path / "sol.csv").write_text("id,landmarks,Usage\nq1,1 7,Public\nq2,2,Public\n")  # 2 landmarks: fine
    code, out = run(monkeypatch, capsys, "evaluate", tmp_path / "s.csv", "--solution", tmp_path / "sol.csv")
    assert code == 0 and json.loads(out)["accuracy"] == 1.0


def test_ninety_megapixels_are_read_and_a_fifo_never_blocks(monkeypatch, capsys, tmp_path):
    from landmark.data import ImageError
    big = tmp_path / "big.png"
    Image.new("1", (9_500, 9_500)).save(big)  # 90.25 Mpixel, under the documented 100 Mpixel limit
    assert load_image(big, draft=64).size == (9_500, 9_500)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("load_image blocked on a FIFO"))
    signal.alarm(20)
    try:
        with pytest.raises(ImageError, match="not a regular file"):
            load_image(fifo)
        code, out = run(monkeypatch, capsys, "match", fifo, big)
    finally:
        signal.alarm(0)
    assert code == 2 and one_error_line(out) and "not a regular file (a FIFO)" in out


def test_nonsense_numbers_are_refused_by_report_and_stats(monkeypatch, capsys, tmp_path):
    code, out = run(monkeypatch, capsys, "report", tmp_path, "--batch-size", 0, "--out", tmp_path / "r")
    assert code == 2 and "batch-size" in out and not (tmp_path / "r").exists()
    code, out = run(monkeypatch, capsys, "stats", tmp_path, "--top", -3, "--out", tmp_path / "s")
    assert code == 2 and "top" in out and not (tmp_path / "s").exists()
