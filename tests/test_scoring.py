"""The one scoring path (issue 21): "no landmark" chosen without non-landmark photos
(leave-class-out), the same answer (name, score, verdict) through predict, recognize, knn, the
Recognizer with the run's index or a copy given as --index, and the HTTP service, with and without an
index; the scoring module imports no torch."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from landmark.retrieval.scoring import (calibrate_landmark, decide, leave_class_out, rank, reference_score,
                                        threshold_for)

TRAINED = ("2", "5", "9", "11")   # landmarks13 ids; 14 training photos each in the run below
HELD_OUT = "3"                    # Cologne Cathedral: never trained on, enrolled by test_enrolment.py (of the
                                  # landmarks13 ones the ImageNet descriptor separates best: docs/quality.md)
TOKEN = "scoring-token"


# --- the functions, on hand-made numbers ---

def test_leave_class_out_renormalises_over_the_other_classes():
    truth = np.array(["a", "b", "c"])
    labels = np.array([["a", "b", "c"], ["a", "b", "c"], ["a", "b", "d"]])
    probs = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.5, 0.3, 0.2]])
    other, p = leave_class_out(truth, labels, probs)
    assert other.tolist() == ["b", "a", "a"]
    np.testing.assert_allclose(p, [0.3 / 0.4, 0.5 / 0.6, 0.5])   # own class not in the top-t: p_own taken as 0


def test_reference_score_averages_over_the_photos_a_landmark_has():
    sims, neighbours = np.array([[0.9, 0.5, 0.4]]), np.array([["x", "y", "y"]])
    assert reference_score(np.array(["x"]), [1.0], sims, neighbours)[0] == pytest.approx((0.9 / 3) ** 3)
    assert reference_score(np.array(["x"]), [1.0], sims, neighbours, counts={"x": 1})[0] == pytest.approx(0.9 ** 3)
    assert reference_score(np.array(["y"]), [0.5], sims, neighbours, counts={"y": 40})[0] == \
        pytest.approx(0.5 * (0.9 / 3) ** 3)


def test_rank_answers_an_enrolled_landmark_only_when_it_outscores_the_classifier():
    labels, probs = np.array([["a", "b"], ["a", "b"]]), np.array([[0.9, 0.1], [0.9, 0.1]])
    sims = np.array([[0.8, 0.7, 0.6, 0.2], [0.9, 0.85, 0.8, 0.3]])
    neighbours = np.array([["new", "new", "new", "a"], ["a", "a", "a", "new"]])
    counts = {"a": 30, "b": 30, "new": 3}
    first, second = rank(labels, probs, sims, neighbours, known={"a", "b"}, counts=counts)
    assert first[0] == ("new", pytest.approx(0.7 ** 3)) and [c for c, _ in first[1:]] == ["a", "b"]
    assert [c for c, _ in second] == ["a", "b", "new"]
    assert second[0][1] == pytest.approx(0.9 * 0.85 ** 3)
    # without an index: the classifier's probabilities as they are
    assert rank(labels, probs)[0] == [("a", 0.9), ("b", 0.1)]


def test_decide_uses_an_enrolled_landmarks_own_threshold():
    own = {"new": {"threshold": 0.3, "photos": 3}}
    assert decide("new", 0.2, 0.05, own) == (False, 0.3)
    assert decide("old", 0.2, 0.05, own) == (True, 0.05)
    assert decide("", 0.9, 0.05) == (False, 0.05) and not decide("x", float("nan"), 0.05)[0]
    assert threshold_for("new", 0.05, {"new": 0.25}) == 0.25


def test_calibration_sits_between_the_nearest_landmark_and_the_landmarks_own_photos():
    rng = np.random.default_rng(0)
    base = rng.normal(size=16)
    own = np.stack([base + 0.3 * rng.normal(size=16) for _ in range(3)])
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    gram = own @ own.T
    sims = np.array([[0.5, 0.2], [0.4, 0.1], [0.45, 0.3]])
    rows = np.array([[7, 8], [7, 9], [7, 8]])   # row 7: the nearest photo of "other"
    labels = np.array([["other", "far"], ["other", "far"], ["other", "far"]])
    out = calibrate_landmark(own, sims, rows, labels, "new", default=0.01)
    impostor = np.mean([0.5, 0.45, 0.4]) ** 3
    weakest = min(np.mean(np.delete(gram[i], i)) ** 3 for i in range(3))
    assert out["impostor_score"] == pytest.approx(impostor, abs=1e-6)
    assert out["threshold"] == pytest.approx((impostor + weakest) / 2, abs=1e-6) and impostor < weakest
    assert out["photos"] == 3 and out["nearest_landmark"] == "other" and out["nearest_similarity"] == 0.5
    assert out["coverage"] == "fair" and out["advice"].startswith("add 2 more photos from other sides")
    assert calibrate_landmark(own, sims, rows, labels, "new", default=0.9)["threshold"] == 0.9   # never below the run's
    single = calibrate_landmark(own[:1], sims[:1], rows[:1], labels[:1], "new", default=0.01)
    assert single["threshold"] == pytest.approx(0.5 ** 3) and single["coverage"] == "poor"


def test_a_photo_indexed_already_under_another_landmark_calibrates_a_threshold_an_index_can_store():
    """Enrolling a copy of a photo the index holds for another landmark (or two copies of one
    photo): float32 similarities of 1.0000001, cubed, made a threshold of 1.00004, which
    every later load of the index refused ('not a number in [0, 1]'): the whole index unusable."""
    from landmark.retrieval.config import is_stored_threshold
    rng = np.random.default_rng(1)
    photo = rng.normal(size=(1, 512)).astype(np.float32)
    photo /= np.linalg.norm(photo, axis=1, keepdims=True)
    own = np.concatenate([photo, photo])
    same = float((photo @ photo.T)[0, 0])
    sims = np.array([[same], [same]], dtype=np.float32)
    out = calibrate_landmark(own, sims, np.array([[7], [7]]), np.array([["other"], ["other"]]), "new", default=0.01)
    assert out["threshold"] <= 1.0 and is_stored_threshold(out["threshold"])
    copy = calibrate_landmark(own[:1], np.array([[1.0000001]]), np.array([[7]]), np.array([["other"]]), "new",
                              default=0.01)
    assert copy["threshold"] == 1.0 and copy["impostor_score"] == 1.0


def test_the_enrolment_reply_says_how_many_photos_how_distinct_and_what_would_help():
    own = np.eye(4, dtype=np.float32)[:3]
    own[:, 3] = 1.0
    own /= np.linalg.norm(own, axis=1, keepdims=True)    # each pair of its photos: similarity 0.5
    rows = np.array([[7], [8], [9]])
    labels = np.array([["other"], ["other"], ["other"]])
    apart = calibrate_landmark(own, np.array([[0.4], [0.3], [0.45]]), rows, labels, "new", default=0.01,
                               name_of={"other": "Hue Imperial City"}.get)
    assert apart["photos_nearest_own"] == 3 and apart["distinct"].endswith(": distinct")
    assert "Hue Imperial City (similarity 0.45, against 0.50 between its own two most alike photos)" in apart["distinct"]
    assert apart["summary"].startswith("3 photos; its nearest other landmark is Hue Imperial City")
    assert apart["summary"].endswith("coverage fair: add 2 more photos from other sides and distances")
    close = calibrate_landmark(own, np.array([[0.6], [0.3], [0.55]]), rows, labels, "new", default=0.01)
    assert close["photos_nearest_own"] == 1 and close["distinct"].endswith(
        "1 of its 3 photos is closest to another of its own, the other 2 to another landmark's: partly distinct")
    assert "most of its photos look more like a photo of other than like its own: add photos from other viewpoints " \
        "that show what sets it apart" in close["advice"]
    assert close["coverage"] == "poor" and apart["coverage"] == "fair"   # 3 photos: distinct or not
    five = np.eye(6, dtype=np.float32)[:5]
    five[:, 5] = 1.0
    five /= np.linalg.norm(five, axis=1, keepdims=True)
    rows5, labels5 = np.arange(5)[:, None] + 7, np.full((5, 1), "other")
    assert calibrate_landmark(five, np.full((5, 1), 0.3), rows5, labels5, "new", default=0.01)["coverage"] == "good"
    near = calibrate_landmark(five, np.full((5, 1), 0.6), rows5, labels5, "new", default=0.01)
    assert near["coverage"] == "fair" and near["distinct"].endswith(
        "none of its 5 photos is closest to another of its own: hardly distinct")
    one = calibrate_landmark(own[:1], np.array([[0.4]]), rows[:1], labels[:1], "new", default=0.01)
    assert one["photos_nearest_own"] is None and one["summary"].startswith(
        "1 photo; its nearest other landmark is other (similarity 0.40); with one photo how alike")


def _unit(rows):
    v = np.asarray(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_the_distinct_words_agree_with_their_numbers():
    """Two close views (similarity 0.9) and a third far from both (0.2): each photo is closest to one
    of its own, so 'distinct'. The sentence compared the nearest landmark's closest photo (0.60) with
    the mean over all pairs of its own (0.43): "similarity 0.60 against 0.43 among its own photos ...:
    distinct", numbers that said the opposite of the words. Like for like now: 0.60 against 0.90."""
    own = np.array([[1, 0, 0], [0.9, np.sqrt(1 - 0.81), 0], [0.2, 0.02 / np.sqrt(1 - 0.81), 0]], dtype=np.float64)
    own[2, 2] = np.sqrt(1 - own[2, 0] ** 2 - own[2, 1] ** 2)
    own = own.astype(np.float32)
    gram = own @ own.T
    assert gram[0, 1] == pytest.approx(0.9, abs=1e-5) and gram[0, 2] == pytest.approx(0.2, abs=1e-5) \
        and gram[1, 2] == pytest.approx(0.2, abs=1e-4)
    out = calibrate_landmark(own, np.array([[0.6], [0.55], [0.1]]), np.array([[7], [8], [9]]),
                             np.array([["x"], ["x"], ["x"]]), "new", default=0.01, name_of={"x": "Alhambra"}.get)
    assert out["photos_nearest_own"] == 3 and out["self_similarity"] == pytest.approx(0.4333, abs=1e-3)
    assert out["distinct"] == ("its nearest other landmark is Alhambra (similarity 0.60, against 0.90 between its own "
                               "two most alike photos); each of its photos is closest to another of its own: distinct")
    # none closest to its own: the other landmark's photo is the closer one in the numbers too
    none = calibrate_landmark(own, np.array([[0.95], [0.92], [0.5]]), np.array([[7], [8], [9]]),
                              np.array([["x"], ["x"], ["x"]]), "new", default=0.01, name_of={"x": "Alhambra"}.get)
    assert none["photos_nearest_own"] == 0 and none["distinct"].startswith(
        "its nearest other landmark is Alhambra (similarity 0.95, against 0.90 between")
    assert none["distinct"].endswith("none of its 3 photos is closest to another of its own: hardly distinct")


def test_good_coverage_asks_for_no_more_photos():
    """5 photos, each closest to another of its own: coverage good. One of them far from the rest
    (its leave-one-out score under the threshold) made the advice go on 'add photos between those
    views', a rating of good followed by a request for photos."""
    five = _unit([[1, 0, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0, 1], [0, 0, 1, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0, 1],
                  [0, 0, 0, 0, 1, 0, 0.2]])   # photo 5 is far from the four others (similarity 0.14)
    rows, labels = np.arange(5)[:, None] + 7, np.full((5, 1), "other")
    out = calibrate_landmark(five, np.full((5, 1), 0.1), rows, labels, "new", default=0.01)
    assert out["coverage"] == "good" and min(out["positive_scores"]) < out["threshold"]   # the case of the defect
    assert out["advice"] == "no more photos needed"
    assert out["summary"].endswith(": distinct; coverage good: no more photos needed") and "add" not in out["summary"]
    # below good the advice still asks: the same photos but one fewer (fair, 4 photos)
    fair = calibrate_landmark(five[:4], np.full((4, 1), 0.1), rows[:4], labels[:4], "new", default=0.01)
    assert fair["coverage"] == "fair" and fair["advice"].startswith("add 1 more photo from other sides")


def test_good_coverage_with_no_shared_geometry_asks_for_no_more_photos(monkeypatch):
    """The enrolment's local-feature words, added to the advice: for a landmark rated good they say
    what was found ('its photos share no geometry with each other') without asking for photos."""
    from types import SimpleNamespace

    from landmark.retrieval import confirm, pipeline
    monkeypatch.setattr(confirm, "available", lambda: True)
    monkeypatch.setattr(confirm, "geometric_coverage", lambda paths: {"pairs": 10, "matched_pairs": 0})
    index = SimpleNamespace(items=pd.DataFrame({"path": [f"{k}.jpg" for k in range(5)]}), labels=np.array(["new"] * 5))
    _, good = pipeline._local_coverage(index, "new", None, good=True)
    assert good == "its photos share no geometry with each other"
    _, fair = pipeline._local_coverage(index, "new", None, good=False)
    assert fair == "its photos share no geometry with each other: add photos of the same side from nearby viewpoints"


def test_the_advice_says_most_only_when_more_than_half_look_like_another_landmark():
    """4 photos, 2 closest to their own and 2 to another landmark's: not 'most of its photos look
    more like a photo of X' (the distinct words said 2 of 4 are closest to their own)."""
    own = _unit([[1, 0, 0, 0, 1], [0, 1, 0, 0, 1], [0, 0, 1, 0, 1], [0, 0, 0, 1, 1]])   # pairs: 0.5
    out = calibrate_landmark(own, np.array([[0.4], [0.45], [0.6], [0.7]]), np.arange(4)[:, None] + 7,
                             np.full((4, 1), "other"), "new", default=0.01, name_of={"other": "Petra"}.get)
    assert out["photos_nearest_own"] == 2 and "2 of its 4 photos are closest to another of its own, the other 2" \
        in out["distinct"]
    assert "2 of its 4 photos look more like a photo of Petra than like its own" in out["advice"]
    assert "most of its photos" not in out["advice"]


def test_partly_distinct_good_coverage_says_what_would_still_help():
    """5 photos, 3 closest to another of their own and 2 to another landmark's, whose photo is closer
    (0.67) than its own two most alike (0.5): the reply said "partly distinct; coverage good: well
    covered: no more photos needed". The rating stays good (most photos closest to their own: the rule
    that split the choosing set's landmarks best, docs/quality.md), and the advice says what would help."""
    five = _unit([[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 1], [0, 0, 1, 0, 0, 1], [0, 0, 0, 1, 0, 1],
                  [0, 0, 0, 0, 1, 1]])   # each pair of its photos: similarity 0.5
    out = calibrate_landmark(five, np.array([[0.4], [0.3], [0.45], [0.67], [0.6]]), np.arange(5)[:, None] + 7,
                             np.full((5, 1), "x"), "new", default=0.01, name_of={"x": "Torre dos Clérigos"}.get)
    assert out["photos_nearest_own"] == 3 and out["distinct"].endswith(": partly distinct")
    assert out["coverage"] == "good"
    assert out["advice"] == ("enough photos to be recognised, though 2 of its 5 photos look more like a photo of "
                             "Torre dos Clérigos than like its own: photos from other viewpoints would set it further "
                             "apart")
    assert out["summary"].endswith(f"partly distinct; coverage good: {out['advice']}")
    assert "no more photos needed" not in out["summary"]
    # most of them closer to another landmark's: fair, and asked for photos
    most = calibrate_landmark(five, np.array([[0.4], [0.6], [0.65], [0.67], [0.6]]), np.arange(5)[:, None] + 7,
                              np.full((5, 1), "x"), "new", default=0.01)
    assert most["coverage"] == "fair" and most["advice"].startswith("most of its photos look more like a photo of x")
    assert most["advice"].endswith("add photos from other viewpoints that show what sets it apart")
    one = calibrate_landmark(five, np.array([[0.4], [0.3], [0.45], [0.67], [0.1]]), np.arange(5)[:, None] + 7,
                             np.full((5, 1), "x"), "new", default=0.01)
    assert one["coverage"] == "good" and "1 of its 5 photos looks more like a photo of x" in one["advice"]


def test_scoring_imports_neither_torch_nor_faiss():
    code = ("import sys, landmark.retrieval.scoring; "
            "print(sorted(m for m in ('torch', 'faiss', 'pandas', 'timm') if m in sys.modules))")
    src = Path(__file__).resolve().parents[1] / "src"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


# --- a real run trained without --nonlandmarks (probe, 4 landmarks x 14 photos, 224 px) ---

def train_small_run(l13: Path, folder: Path) -> Path:
    from landmark import load_config
    from landmark.data import image_path, read_train
    from landmark.training import train
    root = folder / "tree"
    frame = read_train(l13)
    for lid in TRAINED:
        (root / lid).mkdir(parents=True)
        for image_id in sorted(frame[frame["landmark_id"] == lid]["id"])[:14]:
            (root / lid / f"{image_id}.jpg").symlink_to(image_path(l13, image_id))
    config = load_config("fast", {
        "data": {"cache_width": 256, "workers": 0, "val_frac": 0.3, "test_frac": 0.0, "final_fit": False},
        "stages": [{"name": "probe", "probe": True, "weight_decay": 1e-3, "probe_iters": 50,
                    "crop": {"resize": 256, "size": 224}}]})
    train(config, root, folder / "run")
    return folder / "run"


@pytest.fixture(scope="session")
def small_run(l13, tmp_path_factory) -> Path:
    return train_small_run(l13, tmp_path_factory.mktemp("scoring"))


def queries(l13: Path, folder: Path) -> dict[str, str]:
    """A folder of test photos: 2 of each trained landmark, 2 of the held-out one, 2 non-landmarks;
    returns file name -> landmark id ('' for none)."""
    from landmark.data import image_path
    solution = pd.read_csv(l13 / "test" / "recognition_solution.csv", dtype=str, keep_default_na=False)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for lid in (*TRAINED, HELD_OUT):
        for i in sorted(solution.loc[solution["landmarks"] == lid, "id"])[:2]:
            (folder / f"{i}.jpg").symlink_to(image_path(l13, i, "test"))
            truth[f"{i}.jpg"] = lid
    for k, f in enumerate(sorted((l13.parent / "nonlandmarks" / "images").rglob("*.jpg"))[:2]):
        (folder / f"nonlandmark{k}.jpg").symlink_to(f)
        truth[f"nonlandmark{k}.jpg"] = ""
    return truth


@pytest.mark.slow
def test_a_run_without_nonlandmarks_chooses_its_threshold_by_leave_class_out(small_run):
    from landmark.models.factory import load_checkpoint_file
    from landmark.retrieval.embeddings import load_embeddings
    from landmark.retrieval.index import LandmarkIndex
    from landmark.retrieval.reference import choose_thresholds
    reference = json.loads((small_run / "reference.json").read_text())
    method = reference["threshold_method"]
    ckpt = load_checkpoint_file(small_run / "checkpoints" / "best.pt")
    stored = ckpt["reject_threshold"]
    assert method["method"] == "leave-class-out" and method["nonlandmark_photos"] == 0
    assert method["simulated_unknown"] == method["validation_photos"] == reference["validation_queries"] > 0
    assert stored["reference"] > 0 and stored["classifier"] > 0 and ckpt["threshold_method"] == method
    assert method["reference"] == stored["reference"]
    assert reference["threshold_line"].startswith(f"no-landmark threshold {stored['reference']:.4g} (reference")
    assert "leave-class-out on" in reference["threshold_line"]
    # the documented method reproduces it from the validation photos' stored outputs ...
    val = load_embeddings(small_run / "index" / "embeddings" / "validation.npy")
    index = LandmarkIndex.load(small_run / "index")
    truth = val.items["landmark_id"].astype(str).to_numpy()
    vectors = np.asarray(val.vectors, np.float32)
    again, _ = choose_thresholds(index, truth, val.classes[0], val.classes[1], vectors, simulate_unknown=True)
    assert again == pytest.approx(stored)
    # ... where the validation answers alone (the old way without --nonlandmarks) choose less or nothing
    alone, _ = choose_thresholds(index, truth, val.classes[0], val.classes[1], vectors, simulate_unknown=False)
    assert alone["reference"] < stored["reference"]


def _triples(answers) -> list[tuple[str, float, str]]:
    """(name, score, verdict) of each answer: Answer objects, the service's / recognize --json's
    dicts, or an answers frame (predict, knn)."""
    if isinstance(answers, pd.DataFrame):
        return list(zip(answers["name"].astype(str), answers["score"].astype(float), answers["verdict"].astype(str)))
    get = (lambda x, k: x[k]) if isinstance(answers[0], dict) else getattr
    return [(str(get(x, "name")), float(get(x, "score")), str(get(x, "verdict"))) for x in answers]


def _same(answers, expected, where: str) -> None:
    """Identical names and verdicts, scores equal to 4 significant digits (float32 network outputs)."""
    got, want = _triples(answers), _triples(expected)
    assert [(n, v) for n, _, v in got] == [(n, v) for n, _, v in want], where
    np.testing.assert_allclose([s for _, s, _ in got], [s for _, s, _ in want], rtol=1e-4, err_msg=where)


def _served(rec, paths: list[Path], index_dir: Path | None) -> list[dict]:
    from fastapi.testclient import TestClient

    from landmark.serving import create_app
    with TestClient(create_app(rec, token=TOKEN, index_dir=index_dir)) as client:
        res = client.post("/v1/recognize", files=[("file", (p.name, p.read_bytes(), "image/jpeg")) for p in paths])
    assert res.status_code == 200, res.text
    return res.json()["answers"]


@pytest.mark.slow
def test_same_answer_through_predict_recognize_knn_recognizer_and_service(small_run, l13, tmp_path):
    """Issue 21, one scoring path: the same photos get the same (name, score, verdict) from
    `landmark predict`, `landmark recognize`, `landmark knn` (default scoring), the Recognizer
    (the run's own index or a copy given as --index) and the service, with the index; and from
    predict --classifier-only, the Recognizer and the service without one (knn always has one)."""
    from typer.testing import CliRunner

    from landmark import Recognizer
    from landmark.cli import app
    from landmark.inference import predict
    folder = tmp_path / "q"
    truth = queries(l13, folder)
    copy = tmp_path / "my-index"
    shutil.copytree(small_run / "index", copy)
    batch, rejects = predict(small_run, folder, workers=0)
    own = Recognizer.load(small_run)
    given = Recognizer.load(small_run, index=copy)
    assert not rejects and own.scoring == given.scoring == "reference" and own.threshold == given.threshold > 0
    assert "of 4 landmarks" in own.scoring_line()
    paths = [Path(p) for p in batch["path"]]
    a, b = own.recognize(paths), given.recognize(paths)
    runner = CliRunner()
    knn_out = tmp_path / "knn.csv"
    res = runner.invoke(app, ["knn", str(small_run / "checkpoints" / "best.pt"), "--index", str(copy), "--images",
                              str(folder), "--out", str(knn_out), "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["scoring"] == "reference"
    knn = pd.read_csv(tmp_path / "knn.answers.csv", dtype={"id": str, "landmark_id": str, "name": str, "verdict": str},
                      keep_default_na=False).set_index("id").loc[batch["id"]].reset_index()
    res = runner.invoke(app, ["recognize", *map(str, paths), "--model", str(small_run), "--json"])
    assert res.exit_code == 0, res.output
    recognized = json.loads(res.stdout)
    for answers, where in ((a, "Recognizer, run index"), (b, "Recognizer, --index copy"), (knn, "landmark knn"),
                           (recognized, "landmark recognize"), (_served(given, paths, copy), "service")):
        _same(answers, batch, where)
        if where != "landmark recognize":   # the same ids as predict (recognize --json names the file)
            ids = answers["landmark_id"] if isinstance(answers, pd.DataFrame) else \
                [x["landmark_id"] if isinstance(x, dict) else x.landmark_id for x in answers]
            assert list(ids) == batch["landmark_id"].tolist(), where
    assert (knn["score"].to_numpy() == batch["score"].to_numpy()).all()   # knn runs predict's very loop
    # without an index: the classifier alone, the same everywhere
    alone, _ = predict(small_run, folder, workers=0, index=False)
    bare = Recognizer.load(small_run, index=False)
    assert bare.scoring == "classifier"
    _same(bare.recognize(paths), alone, "Recognizer without index")
    _same(_served(bare, paths, None), alone, "service without index")
    # the run knows its landmarks: most of their test photos named right, the non-landmarks not named
    shown = [(Path(x.source).name, truth[Path(x.source).name], x.landmark_id, round(x.score, 4)) for x in a]
    right = sum(x.is_landmark and x.landmark_id == truth[Path(x.source).name] for x in a)
    assert right >= 5, shown
    assert not any(x.is_landmark for x in a if truth[Path(x.source).name] == ""), shown
