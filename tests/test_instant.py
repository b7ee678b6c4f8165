"""Instant answers: ``landmark recognize`` on a run with an ONNX export answers without torch
(checked in a fresh interpreter's ``sys.modules``), its numpy preprocessing gives the pixels
of the PyTorch path, and its answers equal the PyTorch recogniser's (same landmark, score
within 1e-4 relative, same verdict) on real photos, for classifier and reference scoring."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from _helpers import answered
from landmark.data.arrays import eval_input, resize_uint8
from landmark.data.preprocess import Preprocess
from landmark.data.transforms import resize_uint8 as torch_resize
from landmark.inference.answers import decode
from landmark.inference.export import export_onnx
from landmark.inference.instant import InstantRecognizer, open_recognizer
from landmark.inference.recognizer import Recognizer
from landmark.models import create_model, save_checkpoint
from landmark.models.runtime import file_sha256
from landmark.retrieval.embeddings import Embeddings
from landmark.retrieval.index import LandmarkIndex

pytestmark = pytest.mark.usefixtures("one_thread")   # conftest: one intra-op torch thread
SRC = Path(__file__).resolve().parents[1] / "src"
CLASSES = ["9", "11", "0"]   # Machu Picchu, Petra, and a third landmarks13 class
PREPROCESS = {"size": 64, "resize": 72, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
HEAVY = ("torch", "timm", "torchvision", "pandas", "matplotlib", "onnx")


def _train_photos(l13: Path, per_class: int) -> pd.DataFrame:
    rows = pd.read_csv(l13 / "train.csv", dtype=str)
    rows = rows[rows["landmark_id"].isin(CLASSES)].groupby("landmark_id").head(per_class)
    return rows.assign(path=[str(l13 / "train" / i[0] / i[1] / i[2] / f"{i}.jpg") for i in rows["id"]])


@pytest.fixture(scope="module")
def test_photos(l13) -> list[str]:
    return [str(p) for p in sorted((l13 / "test").rglob("*.jpg"))[:12]]


@pytest.fixture(scope="module")
def run(l13, tmp_path_factory, test_photos) -> Path:
    """A run folder as train + export write it: a tiny network (test_efficientnet), its fp32
    export, stored thresholds, and a reference index of 6 real photos per landmark."""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("instant") / "run"
    model = create_model("test_efficientnet", len(CLASSES), weights="none").eval()
    ckpt = run / "checkpoints" / "best.pt"
    save_checkpoint(ckpt, model, CLASSES, preprocess=PREPROCESS, names={"9": "Machu Picchu", "11": "Petra"},
                    reject_threshold={"classifier": 0.34, "reference": 0.2})
    (run / "run.json").write_text(json.dumps({"data": str(l13)}))
    queries = run.parent / "queries.csv"
    pd.DataFrame({"id": [Path(p).stem for p in test_photos], "path": test_photos}).to_csv(queries, index=False)
    export_onnx(ckpt, run / "model.onnx", images=queries, verify_images=6, threads=1)
    refs = _train_photos(l13, 6).reset_index(drop=True)
    torch_rec = Recognizer.load(ckpt, index=False, runtime="torch")
    vectors = torch_rec.embed([decode(p) for p in refs["path"]])
    meta = {"role": "reference", "model": {"checkpoint": str(ckpt), "sha256": file_sha256(ckpt),
                                           "backbone": "test_efficientnet", "image_size": 64}}
    LandmarkIndex.build(Embeddings(vectors, refs[["id", "landmark_id", "path"]]), meta=meta).save(run / "index")
    return run


def test_numpy_resize_gives_the_pixels_of_the_torch_path(l13, test_photos):
    """data.arrays.resize_uint8 == data.transforms.resize_uint8 exactly (down- and up-scaling,
    greyscale converted to RGB), and eval_input equals Preprocess.transform(1) within 1e-6."""
    rng = np.random.default_rng(0)
    images = [decode(p) for p in test_photos[:6]] + [
        Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)),            # upscaled to 64 / 224
        Image.fromarray(rng.integers(0, 256, (301, 97), dtype=np.uint8)).convert("RGB")]
    for side in (64, 224, 37):
        for img in images:
            ours = resize_uint8(np.asarray(img), side)
            theirs = torch_resize(side)(img).permute(1, 2, 0).numpy()
            assert ours.shape == (side, side, 3) and np.array_equal(ours, theirs), (side, img.size)
    pre = Preprocess.of(PREPROCESS)
    x = eval_input(images, pre)
    y = torch.stack([pre.transform(1)(img) for img in images]).numpy()
    assert x.dtype == np.float32 and x.shape == (len(images), 3, 64, 64)
    assert np.abs(x - y).max() < 1e-6
    with pytest.raises(ValueError, match="uint8"):
        resize_uint8(np.zeros((4, 4, 3), np.float32), 2)


@pytest.mark.parametrize("scoring", ["reference", "classifier"])
def test_instant_answers_equal_the_pytorch_recognizer(run, test_photos, l13, scoring):
    """Same landmark, score within 1e-4 relative, same verdict, same neighbours, for real photos
    (test photos and train photos of the indexed landmarks), with the threshold set between
    two of the scores so that both verdicts occur."""
    photos = test_photos + list(_train_photos(l13, 8)["path"].iloc[::4])
    index = None if scoring == "reference" else False
    slow = Recognizer.load(run, runtime="torch", index=index)
    assert slow.scoring == scoring
    scores = sorted(a.score for a in slow.recognize(photos, top_k=3))
    gap = int(np.argmax(np.diff(scores[2:-2]))) + 2   # the widest gap away from the ends
    threshold = (scores[gap] + scores[gap + 1]) / 2
    slow = Recognizer.load(run, runtime="torch", index=index, threshold=threshold)
    fast = open_recognizer(run, threshold=threshold) if scoring == "reference" else \
        InstantRecognizer(open_recognizer(run).runtime, None, threshold)
    assert isinstance(fast, InstantRecognizer) and fast.scoring == scoring
    a, b = fast.recognize(photos, top_k=3), slow.recognize(photos, top_k=3)
    assert {x.is_landmark for x in b} == {True, False}
    for x, y in zip(a, b):
        assert (x.landmark_id, x.name, x.is_landmark, x.threshold) == (y.landmark_id, y.name, y.is_landmark, y.threshold)
        assert x.score == pytest.approx(y.score, rel=1e-4, abs=1e-9)
        assert [c.landmark_id for c in x.top_k] == [c.landmark_id for c in y.top_k]
        assert [n.id for n in x.neighbours] == [n.id for n in y.neighbours]


def test_stored_threshold_and_names_come_from_the_export(run):
    fast = open_recognizer(run)
    assert isinstance(fast, InstantRecognizer)
    assert (fast.scoring, fast.threshold) == ("reference", 0.2)
    assert fast.name("9") == "Machu Picchu" and fast.name("0") == "0"
    assert InstantRecognizer(fast.runtime, None).threshold == 0.34


def test_what_needs_pytorch_gets_the_recognizer(run, tmp_path):
    """--runtime torch, voting, --explain, a GPU device and a run without an export load the
    PyTorch Recognizer; a .onnx given directly answers instantly."""
    assert isinstance(open_recognizer(run, runtime="torch"), Recognizer)
    assert isinstance(open_recognizer(run, tta=2), Recognizer)
    assert isinstance(open_recognizer(run, explain=True), Recognizer)
    assert isinstance(open_recognizer(run / "model.onnx"), InstantRecognizer)
    lone = tmp_path / "lone"
    (lone / "checkpoints").mkdir(parents=True)
    (lone / "checkpoints" / "best.pt").write_bytes((run / "checkpoints" / "best.pt").read_bytes())
    assert isinstance(open_recognizer(lone), Recognizer)


def _recognize_in_fresh_python(args: list[str]) -> tuple[subprocess.CompletedProcess, dict]:
    code = ("import json, sys\nfrom landmark.cli import main\nsys.argv = ['landmark', *json.loads(sys.argv[1])]\n"
            "try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\n"
            f"print('MODULES', json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}), file=sys.stderr)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, env=env,
                          timeout=300)
    line = next(x for x in done.stderr.splitlines() if x.startswith("MODULES "))
    return done, json.loads(line.split(" ", 1)[1])


def test_recognize_with_an_export_imports_no_torch(run, test_photos):
    """The command, in a fresh interpreter: an answer, the runtime line says the export answers
    without PyTorch, and none of torch, timm, torchvision, pandas, matplotlib or onnx was imported;
    the same command with --runtime torch does import torch (so this test can fail)."""
    done, loaded = _recognize_in_fresh_python(["recognize", test_photos[0], "--model", str(run), "--json"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["scoring"] == "reference"
    assert f"runtime: onnx ({run / 'model.onnx'}, fp32; auto: the export of best.pt, without PyTorch)" in done.stderr
    assert loaded == dict.fromkeys(HEAVY, False), loaded
    done, loaded = _recognize_in_fresh_python(["recognize", test_photos[0], "--model", str(run), "--runtime", "torch"])
    assert done.returncode == 0 and loaded["torch"], done.stderr


def test_tag_with_an_export_imports_no_torch(run, test_photos, tmp_path):
    """`landmark tag` on a run with an export answers through the torch-free recogniser, in a fresh
    interpreter: none of torch, timm, torchvision, pandas, matplotlib or onnx imported, and each
    sidecar holds the answer `landmark recognize --model RUN` gives; with --runtime torch the same
    command imports torch (so this test can fail)."""
    import shutil
    pytest.importorskip("exiv2", reason="exiv2 not installed: pip install 'landmark[tag]'")
    from landmark.inference.tagging import read_xmp, sidecar_path
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in test_photos[:3]:
        shutil.copy(p, photos / Path(p).name)
    done, loaded = _recognize_in_fresh_python(["tag", str(photos), "--model", str(run)])
    assert done.returncode == 0, done.stderr
    assert "tagged" in done.stdout and loaded == dict.fromkeys(HEAVY, False), (loaded, done.stdout)
    files = sorted(photos.glob("*.jpg"))
    rec = open_recognizer(run)
    assert isinstance(rec, InstantRecognizer)
    for photo, answer in zip(files, rec.recognize(files)):
        xmp = read_xmp(sidecar_path(photo))
        assert answered(xmp) == answer.landmark_id
        assert xmp["Xmp.landmark.verdict"] == [answer.verdict]
        assert xmp["Xmp.landmark.score"] == [f"{answer.score:.4f}"] and xmp["Xmp.landmark.scoring"] == ["reference"]
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(test_photos[0], other / "a.jpg")
    done, loaded = _recognize_in_fresh_python(["tag", str(other), "--model", str(run), "--runtime", "torch"])
    assert done.returncode == 0 and loaded["torch"], done.stderr
    assert answered(read_xmp(sidecar_path(other / "a.jpg"))) == \
        answered(read_xmp(sidecar_path(files[[f.name for f in files].index(Path(test_photos[0]).name)])))


def test_a_large_jpeg_gets_the_same_answer_from_predict_recognize_and_tag(run, test_photos, tmp_path):
    """A camera-sized JPEG (landmarks13 photos are all under 1024 px: one is enlarged 5x in the test)
    is decoded by JPEG draft to at least twice the model's side everywhere (as predict decodes it):
    `landmark predict`, `landmark recognize` and `landmark tag` give the same landmark and score."""
    import shutil
    pytest.importorskip("exiv2", reason="exiv2 not installed: pip install 'landmark[tag]'")
    from typer.testing import CliRunner

    from landmark.cli import app
    from landmark.inference import predict
    from landmark.inference.tagging import read_xmp, sidecar_path
    folder = tmp_path / "big"
    folder.mkdir()
    with Image.open(test_photos[1]) as im:
        im.convert("RGB").resize((im.width * 5, im.height * 5), Image.BICUBIC).save(folder / "big.jpg", quality=92)
    batch, _ = predict(run, folder, workers=0)
    want = (batch["landmark_id"].iat[0], f"{batch['score'].iat[0]:.5f}")
    done = CliRunner().invoke(app, ["recognize", str(folder / "big.jpg"), "--model", str(run), "--json"])
    assert done.exit_code == 0, done.output
    said = json.loads(done.stdout)[0]
    assert (said["landmark_id"], f"{said['score']:.5f}") == want
    assert (open_recognizer(run).recognize(folder / "big.jpg")[0].landmark_id,) == want[:1]
    shutil.copytree(folder, tmp_path / "lib")
    done = CliRunner().invoke(app, ["tag", str(tmp_path / "lib"), "--model", str(run)])
    assert done.exit_code == 0, done.output
    xmp = read_xmp(sidecar_path(tmp_path / "lib" / "big.jpg"))
    assert (answered(xmp), xmp["Xmp.landmark.score"][0]) == (want[0], f"{float(want[1]):.4f}")


def test_an_index_with_enrolled_landmarks_gets_the_same_answers_on_both_paths(run, l13, tmp_path, caplog):
    """Landmark 3 (Cologne Cathedral, not a class) enrolled with 3 photos: with the local extra
    installed, ``open_recognizer`` hands the index to the Recognizer (it confirms enrolled
    landmarks by local features); the torch-free recogniser on the same index answers as the
    Recognizer without confirmation (``confirm_enrolled=False``), for every photo."""
    import shutil

    from landmark.retrieval.confirm import available
    from landmark.retrieval.index_reader import ReadOnlyIndex
    from landmark.retrieval.pipeline import enrol
    folder = tmp_path / "index"
    shutil.copytree(run / "index", folder)
    rows = pd.read_csv(l13 / "train.csv", dtype=str)
    cologne = rows[rows["landmark_id"] == "3"].sort_values("id").head(6)
    paths = [str(l13 / "train" / i[0] / i[1] / i[2] / f"{i}.jpg") for i in cologne["id"]]
    slow = Recognizer.load(run, runtime="torch", index=folder, confirm_enrolled=False)
    vectors = slow.embed([decode(p) for p in paths[:3]])
    enrol(folder, Embeddings(vectors, cologne.head(3)[["id", "landmark_id"]].assign(path=paths[:3]),
                             model=slow.index.meta.get("model")))
    with caplog.at_level("INFO", logger="landmark.runtime"):
        rec = open_recognizer(run, index=folder)
    assert isinstance(rec, Recognizer if available() else InstantRecognizer)
    said = "PyTorch recogniser loaded, not the export alone: enrolled landmarks confirmed by local features"
    assert (said in caplog.text) == available()   # the user is told why it is not the light path
    slow = Recognizer.load(run, runtime="torch", index=folder, confirm_enrolled=False)
    assert slow.confirmer is None and "3" in slow.landmark_thresholds
    fast = InstantRecognizer(open_recognizer(run / "model.onnx").runtime, ReadOnlyIndex.load(folder))
    photos = paths[3:] + [str(p) for p in sorted((l13 / "test").rglob("*.jpg"))[:6]]
    a, b = fast.recognize(photos, top_k=3), slow.recognize(photos, top_k=3)
    for x, y in zip(a, b):
        assert (x.landmark_id, x.is_landmark, x.threshold, x.inliers) == (y.landmark_id, y.is_landmark, y.threshold, None)
        assert x.score == pytest.approx(y.score, rel=1e-4, abs=1e-9)
