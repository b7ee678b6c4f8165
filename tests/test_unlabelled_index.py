"""An archive of unlabelled photos: ``landmark index build --images DIR`` without ``--label`` indexes them
without a landmark (``landmark_id`` empty, ``meta.json`` ``unlabelled``), ``landmark retrieve`` finds them,
and every reader that names landmarks refuses the index in one line (one rule:
:func:`landmark.retrieval.index_reader.refuse_unlabelled`).  Six real landmarks13 photos linked into a
folder, a tiny untrained checkpoint."""
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from _helpers import run, tiny_checkpoint
from landmark.cli import app
from landmark.data import image_path
from landmark.retrieval.index import UNLABELLED, LandmarkIndex, unlabelled_note

PREPROCESS = {"size": 64, "resize": 72, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# landmarks13 test photos: two of Machu Picchu, two of Petra, two of the test set's first (any content)
PHOTOS = ["09b94794cb834d50", "58c40deac2687de1", "20edec4333593175", "40a3effbdea65066"]
MORE = ["0003de5a85b027b5", "005ef882acc88262"]
REFUSED = "error: the index holds 6 photos without a landmark (indexed without --label): it serves `landmark " \
          "retrieve` only, not "
runner = CliRunner()


def _folder(l13, folder, ids):
    folder.mkdir()
    for i in ids:
        (folder / f"{i}.jpg").symlink_to(image_path(l13, i, "test"))
    return folder


@pytest.fixture(scope="module")
def archive(l13, tmp_path_factory):
    """(work folder, checkpoint, the archive's photos, its index), built by the command."""
    work = tmp_path_factory.mktemp("unlabelled")
    tiny_checkpoint(work / "m.pt", PREPROCESS)
    photos = _folder(l13, work / "archive", PHOTOS + MORE)
    built = runner.invoke(app, ["index", "build", "--images", str(photos), "--out", str(work / "idx"),
                                "--checkpoint", str(work / "m.pt"), "--workers", "0"])
    assert built.exit_code == 0, built.output
    return work, work / "m.pt", photos, work / "idx", built


def test_index_build_without_label_indexes_photos_without_a_landmark(archive):
    work, _, photos, idx, built = archive
    assert unlabelled_note(6, 6) + "\n" in built.stderr
    assert ("index of 6 photos, every one without a landmark: it serves `landmark retrieve` and `serve "
            "--retrieval-index` (recognize, predict, knn, tag and serve --index need photos with landmarks: --label "
            "NAME or --data DIR; index add takes more photos without a landmark)") == unlabelled_note(6, 6)
    result = json.loads(built.stdout)
    assert (result["count"], result["unlabelled"], result["landmarks"], result["rejects"]) == (6, 6, 0, 0)
    items = pd.read_csv(idx / "items.csv", dtype=str, keep_default_na=False)
    assert sorted(items["id"]) == sorted(PHOTOS + MORE) and (items["landmark_id"] == UNLABELLED).all()
    meta = json.loads((idx / "meta.json").read_text())
    assert (meta["unlabelled"], meta["landmarks"], meta["count"]) == (6, 0, 6)
    index = LandmarkIndex.load(idx)
    assert index.unlabelled == 6 and "unlabelled" not in index.meta   # counted from the rows, not carried
    # the same from its embeddings file, whose ids.csv has no landmark_id: unlabelled too
    again = runner.invoke(app, ["index", "build", "--embeddings", str(idx / "embeddings.npy"),
                                "--out", str(work / "from_npy")])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["unlabelled"] == 6 and unlabelled_note(6, 6) in again.stderr


def test_retrieve_finds_the_photo_itself_first(archive):
    work, _, photos, idx, _ = archive
    query = photos / f"{PHOTOS[1]}.jpg"
    found = runner.invoke(app, ["retrieve", str(query), "--index", str(idx), "--json", "--top-k", "3",
                                "--out", str(work / "r.csv"), "--workers", "0"])
    assert found.exit_code == 0, found.output
    answer = json.loads(found.stdout)
    assert len(answer) == 1 and answer[0]["id"] == PHOTOS[1]
    images = answer[0]["images"]
    assert [im["landmark_id"] for im in images] == ["", "", ""]
    assert images[0]["id"] == PHOTOS[1] and images[0]["path"] == str(query)
    assert images[0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    assert len({im["id"] for im in images}) == 3 and images[1]["similarity"] < images[0]["similarity"]
    submission = pd.read_csv(work / "r.csv", dtype=str)
    assert submission["images"].iloc[0].split() == [im["id"] for im in images]


def test_unlabelled_photos_are_no_landmark_of_n_photos_for_diffusion(archive):
    """Unlabelled rows are not counted as a landmark's photos: an archive alone has 0 photos a landmark, so
    the default ranking leaves diffusion out (as for landmarks of few photos); a mixed index counts its
    labelled landmarks only."""
    from landmark.retrieval.config import RetrieveConfig
    from landmark.retrieval.embeddings import Embeddings
    from landmark.retrieval.pipeline import photos_per_landmark, rank_index
    _, _, _, idx, _ = archive
    index = LandmarkIndex.load(idx)
    assert photos_per_landmark(index) == 0.0
    queries = index.stored(np.arange(3))
    default = rank_index(index, queries, RetrieveConfig(top_k=6))
    plain = rank_index(index, queries, RetrieveConfig(top_k=6, diffusion=0))
    np.testing.assert_array_equal(default[1], plain[1])
    np.testing.assert_allclose(default[0], plain[0])
    assert default[1][:, 0].tolist() == [0, 1, 2]   # each photo finds itself first
    forced = rank_index(index, queries, RetrieveConfig(top_k=6, diffusion_min_photos=0))   # a preset can force it
    assert not np.array_equal(forced[1], plain[1])
    vectors = np.eye(18, 8, dtype=np.float32)[:, :8] + 0.01
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = ["a"] * 3 + ["b"] * 5 + [""] * 10
    mixed = LandmarkIndex.build(Embeddings(vectors, pd.DataFrame({"id": [f"p{i}" for i in range(18)],
                                                                  "landmark_id": labels})))
    assert photos_per_landmark(mixed) == 4.0 and mixed.unlabelled == 10 and mixed.landmark_count == 2


@pytest.mark.parametrize("command, use", [
    (["recognize", "{photo}", "--model", "{model}", "--index", "{idx}"], "recognition"),
    (["predict", "{model}", "--images", "{photos}", "--index", "{idx}", "--out", "{work}/p.csv"], "recognition"),
    (["knn", "{model}", "--index", "{idx}", "--images", "{photos}", "--out", "{work}/k.csv"], "recognition"),
    (["knn", "{model}", "--index", "{idx}", "--images", "{photos}", "--out", "{work}/v.csv", "--scoring", "knn-vote"],
     "the kNN vote"),
    (["tag", "{photos}", "--model", "{model}", "--index", "{idx}"], "recognition"),
    (["serve", "{model}", "--index", "{idx}", "--port", "0"], "recognition"),
    (["index", "add", "{idx}", "--images", "{photos}", "--label", "Petra"], "enrolment"),
    (["index", "add", "{idx}", "--data", "{l13}", "--landmarks", "9"], "enrolment"),
])
def test_readers_that_name_landmarks_refuse_it_in_one_line(archive, l13, monkeypatch, capsys, tmp_path, command,
                                                          use):
    _, model, photos, idx, _ = archive
    fill = {"photo": photos / f"{PHOTOS[0]}.jpg", "model": model, "idx": idx, "photos": photos, "work": tmp_path,
            "l13": l13}
    before = sorted(p.name for p in idx.iterdir())
    import uvicorn
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)   # a serve not refused returns
    code, output = run(monkeypatch, capsys, *[part.format(**fill) for part in command])
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in output, output
    assert errors[0].startswith(REFUSED + use + "; "), errors[0]
    if use == "enrolment":
        assert errors[0].endswith("and enrol into that one (more photos without a landmark: index add --images DIR "
                                  "without --label)")
    else:
        assert "give an index built from photos with landmarks" in errors[0]
    assert sorted(p.name for p in idx.iterdir()) == before   # nothing written into the index
    assert not list(photos.glob("*.xmp")) and not list(tmp_path.iterdir())   # no sidecar, submission or answers


def test_the_library_refuses_it_too(archive):
    from landmark import Recognizer
    from landmark.retrieval.embeddings import Embeddings
    from landmark.retrieval.pipeline import enrol
    _, model, _, idx, _ = archive
    with pytest.raises(ValueError, match="^the index holds 6 photos without a landmark .* not recognition; "):
        Recognizer.load(model, index=idx)
    index = LandmarkIndex.load(idx)
    labelled = Embeddings(index.stored(np.arange(1)), pd.DataFrame({"id": ["new"], "landmark_id": ["Petra"]}),
                          model=index.meta["model"])
    with pytest.raises(ValueError, match="not enrolment; enrolled landmarks could not be recognised"):
        enrol(idx, labelled)
    assert len(LandmarkIndex.load(idx)) == 6


@pytest.mark.slow
def test_the_recogniser_without_pytorch_refuses_it(archive, tmp_path, monkeypatch, capsys):
    """With an ONNX export beside the checkpoint, recognize answers without PyTorch (the
    ReadOnlyIndex): it refuses the archive before choosing a recogniser."""
    work, model, photos, idx, _ = archive
    (tmp_path / "m.pt").write_bytes(model.read_bytes())
    code, output = run(monkeypatch, capsys, "export", tmp_path / "m.pt", "--images", photos)
    assert code == 0 and (tmp_path / "m.onnx").is_file(), output
    code, output = run(monkeypatch, capsys, "recognize", photos / f"{PHOTOS[0]}.jpg", "--model", tmp_path / "m.pt",
                       "--index", idx)
    assert code == 2 and output.strip().splitlines()[-1].startswith(REFUSED + "recognition; "), output
    assert "PyTorch recogniser loaded" not in output


def test_the_archive_grows_by_photos_without_a_landmark(archive, l13, tmp_path):
    """index add --images without --label into an archive adds unlabelled photos (duplicates skipped); into
    an index of labelled photos it stays refused, so a recognition index never gets rows without a landmark."""
    import shutil
    work, model, _, idx, _ = archive
    grown = tmp_path / "grown"
    shutil.copytree(idx, grown)
    more = _folder(l13, tmp_path / "more", ["01349f760e252ea0", "01e461cb9731a018"])
    added = runner.invoke(app, ["index", "add", str(grown), "--images", str(more), "--workers", "0"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout) == {"index": str(grown), "added": 2, "skipped_duplicates": 0, "count": 8,
                                        "unlabelled": 8, "rejects": 0}
    again = runner.invoke(app, ["index", "add", str(grown), "--images", str(more), "--workers", "0"])
    assert json.loads(again.stdout)["skipped_duplicates"] == 2 and len(LandmarkIndex.load(grown)) == 8
    assert json.loads((grown / "meta.json").read_text())["unlabelled"] == 8
    labelled = tmp_path / "labelled"
    built = runner.invoke(app, ["index", "build", "--images", str(more), "--label", "Petra", "--out", str(labelled),
                                "--checkpoint", str(model), "--workers", "0"])
    assert built.exit_code == 0 and "without a landmark" not in built.stderr, built.output
    assert "unlabelled" not in json.loads((labelled / "meta.json").read_text())
    refused = runner.invoke(app, ["index", "add", str(labelled), "--images", str(more), "--workers", "0"])
    assert refused.exit_code == 2 and refused.stderr.startswith("error: --images needs --label"), refused.output
    refused = runner.invoke(app, ["index", "add", str(labelled), "--embeddings", str(idx / "embeddings.npy")])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr == (f"error: the photos of {idx / 'embeddings.npy'} have no landmark (no landmark_id in "
                              f"its ids.csv, or an empty one): give --labels CSV (id,landmark_id)\n")
    assert LandmarkIndex.load(labelled).unlabelled == 0


def test_the_service_searches_an_archive_as_its_retrieval_index(archive, tmp_path):
    """`serve --retrieval-index ARCHIVE` (Recognizer.use_retrieval_index): the recogniser keeps answering
    from its own model; /v1/retrieve finds the archive's photos, without a landmark name."""
    import shutil

    from _helpers import tiny_recognizer
    from landmark.retrieval.config import RetrieveConfig
    work, model, photos, idx, _ = archive
    rec = tiny_recognizer(tmp_path)
    rec.use_retrieval_index(idx)
    first = rec.retrieve(photos / f"{PHOTOS[1]}.jpg", top_k=3, config=RetrieveConfig(qe=0, dba=0, diffusion=0))[0]
    assert first[0].id == PHOTOS[1] and first[0].landmark_id == "" and first[0].name == ""
    assert first[0].similarity == pytest.approx(1.0, abs=5e-3) and len(first) == 3
    # a checkpoint the index records is gone: one line naming it, nothing loaded
    gone = tmp_path / "idx"
    shutil.copytree(idx, gone)
    meta = json.loads((gone / "meta.json").read_text())
    meta["model"]["checkpoint"] = str(tmp_path / "moved.pt")
    (gone / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match="moved.pt .model 1 of 1., which is gone"):
        rec.use_retrieval_index(gone)


def test_labels_csv_cells_name_landmarks_as_label_does(archive, tmp_path):
    """A --labels cell of spaces only was the landmark " " (recognize answered name " ", is_landmark true) and
    "Notre Dame" an id with a space (predict refused the index afterwards); now a cell names its landmark as
    --label does: spaces only is a photo without a landmark, "Notre Dame" the id Notre_Dame."""
    _, _, _, idx, _ = archive
    ids = pd.read_csv(idx / "embeddings.ids.csv", dtype=str)["id"].tolist()
    cells = [" Notre Dame", "Notre  Dame ", "Petra", " ", "  ", ""]
    pd.DataFrame({"id": ids, "landmark_id": cells}).to_csv(tmp_path / "labels.csv", index=False)
    built = runner.invoke(app, ["index", "build", "--embeddings", str(idx / "embeddings.npy"), "--labels",
                                str(tmp_path / "labels.csv"), "--out", str(tmp_path / "mixed")])
    assert built.exit_code == 0, built.output
    assert unlabelled_note(3, 6) + "\n" in built.stderr
    index = LandmarkIndex.load(tmp_path / "mixed")
    assert index.labels.tolist() == ["Notre_Dame", "Notre_Dame", "Petra", UNLABELLED, UNLABELLED, UNLABELLED]
    assert (index.unlabelled, index.landmark_count) == (3, 2)


def test_a_missing_landmark_id_in_a_library_frame_is_unlabelled(tmp_path):
    """Embeddings whose landmark_id is None or NaN (a library caller's photos without a landmark) were indexed as
    a landmark NaN in memory (unlabelled 0, so a Recognizer given the index answered it) and read back from
    items.csv as unlabelled; now they are unlabelled from the start."""
    from landmark.retrieval.embeddings import Embeddings
    vectors = np.eye(4, 8, dtype=np.float32)
    emb = Embeddings(vectors, pd.DataFrame({"id": list("abcd"), "landmark_id": ["x", None, np.nan, "y"]}))
    assert emb.labels.tolist() == ["x", UNLABELLED, UNLABELLED, "y"]
    index = LandmarkIndex.build(emb)
    assert index.labels.tolist() == ["x", UNLABELLED, UNLABELLED, "y"] and index.unlabelled == 2
    index.save(tmp_path / "idx")
    assert LandmarkIndex.load(tmp_path / "idx").labels.tolist() == index.labels.tolist()


def test_an_index_built_from_a_relative_folder_keeps_absolute_paths(archive, tmp_path, monkeypatch):
    """`index build --images archive` from the folder above stored `archive/x.jpg`: served from elsewhere
    (`serve --retrieval-index ../idx`), every thumbnail was a 404 (its file 'cannot be read')."""
    work, model, photos, _, _ = archive
    monkeypatch.chdir(photos.parent)
    built = runner.invoke(app, ["index", "build", "--images", photos.name, "--out", str(tmp_path / "rel"),
                                "--checkpoint", str(model), "--workers", "0"])
    assert built.exit_code == 0, built.output
    paths = pd.read_csv(tmp_path / "rel" / "items.csv", dtype=str)["path"]
    assert all(p.startswith("/") for p in paths) and sorted(paths) == sorted(str(photos / f"{i}.jpg")
                                                                             for i in PHOTOS + MORE)


def test_serve_refuses_a_folder_that_is_no_index_before_the_model_loads(archive, tmp_path):
    work, model, photos, idx, _ = archive
    run = tmp_path / "run"
    (run / "index").mkdir(parents=True)
    (run / "index" / "meta.json").write_text("{}")
    for option, folder, hint in (("--retrieval-index", photos, ""), ("--index", run, f": the run's own index is "
                                                                                      f"{run / 'index'}")):
        done = runner.invoke(app, ["serve", str(model), option, str(folder), "--port", "0"])
        assert done.exit_code == 2 and done.output == (f"error: {option} {folder} holds no index (no meta.json): give "
                                                       f"a folder landmark index build wrote{hint}\n")
