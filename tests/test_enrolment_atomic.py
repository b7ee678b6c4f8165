"""A refused, failed or interrupted ``landmark index add`` leaves the index folder exactly as it was:
the same files, ``meta.json`` and ``items.csv`` byte for byte, no ``added-*.npy`` nor hidden
staged files (real photos of landmarks13, a small random checkpoint)."""
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from landmark.cli import app
from landmark.models import create_model, save_checkpoint
from landmark.inference import recognizer
from landmark.retrieval import pipeline
from landmark.retrieval.embeddings import labelled_images
from landmark.retrieval.index import IndexParams
from landmark.retrieval.pipeline import build_index, embed_checkpoint

PREPROCESS = {"size": 64, "resize": 72, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
runner = CliRunner()


@pytest.fixture
def made(l13, tmp_path):
    """An index of 8 photos of landmarks 9 and 11 (named Machu Picchu, Petra), its checkpoint
    recorded, and a CSV of 4 other photos of landmark 10 to enrol."""
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "a.pt", create_model("test_efficientnet", 3, weights="none").eval(), ["a", "b", "c"],
                    preprocess=PREPROCESS)
    frame = labelled_images(l13, ["9", "11"]).groupby("landmark_id").head(4).reset_index(drop=True)
    emb, _, info = embed_checkpoint(tmp_path / "a.pt", frame, tmp_path / "a.npy", workers=0, runtime="torch",
                                    dtype="float32")
    build_index(emb, tmp_path / "idx", params=IndexParams(kind="flat"), model_info=info,
                names={"9": "Machu Picchu", "11": "Petra"})
    labelled_images(l13, ["10"]).head(4)[["id", "path"]].to_csv(tmp_path / "new.csv", index=False)
    return tmp_path


def folder_state(folder):
    """Every file of the folder and its bytes (the writers' lock file: only its name, it holds a pid)."""
    return {p.name: b"" if p.name == ".lock" else p.read_bytes() for p in sorted(folder.iterdir())}


def add(made, label):
    return runner.invoke(app, ["index", "add", str(made / "idx"), "--images", str(made / "new.csv"),
                               "--label", label, "--workers", "0"])


def no_embedding(monkeypatch):
    """Make embedding a photo fail the test: a refusal must come before it (seconds a photo)."""
    def embedded(*args, **kwargs):
        raise AssertionError("photos were embedded before the refusal")
    monkeypatch.setattr(pipeline, "embed_checkpoint", embedded)


def test_a_refused_enrolment_leaves_the_folder_as_it_was(made, monkeypatch):
    before = folder_state(made / "idx")
    assert {"index.faiss", "items.csv", "meta.json"} <= set(before)
    no_embedding(monkeypatch)   # refused before any photo is embedded (it was after all of them, ~12 s)
    result = add(made, "petra")   # 'petra' beside the index's 'Petra' (landmark 11)
    assert result.exit_code == 2, result.output
    assert result.stderr == ("error: 'petra' differs from 'Petra', a landmark this index already has, only in case, "
                             "'_' or spaces: to add photos of Petra, give its id '11' exactly; for another landmark, "
                             "choose a name that differs in more (nothing was enrolled)\n")
    assert folder_state(made / "idx") == before


def test_a_name_alike_a_landmark_of_the_classifier_is_refused_before_embedding(made, l13, monkeypatch):
    """'India Gate' spelt 'india gate' beside the model's 'India_Gate' (not in the index): refused
    before embedding, in one line naming both spellings and what to give (index add did not check
    the classifier's landmarks at all); the model's name given exactly is taken."""
    from landmark.retrieval.index import LandmarkIndex
    torch.manual_seed(0)
    save_checkpoint(made / "g.pt", create_model("test_efficientnet", 3, weights="none").eval(),
                    ["India_Gate", "b", "c"], preprocess=PREPROCESS)
    frame = labelled_images(l13, ["9"]).head(2).reset_index(drop=True)
    emb, _, info = embed_checkpoint(made / "g.pt", frame, made / "g.npy", workers=0, runtime="torch", dtype="float32")
    build_index(emb, made / "gidx", params=IndexParams(kind="flat"), model_info=info)
    no_embedding(monkeypatch)
    before = folder_state(made / "gidx")
    result = runner.invoke(app, ["index", "add", str(made / "gidx"), "--images", str(made / "new.csv"),
                                 "--label", "india gate", "--workers", "0"])
    assert result.exit_code == 2, result.output
    assert result.stderr == ("error: 'india gate' differs from 'India Gate', a landmark the model already has, only "
                             "in case, '_' or spaces: to add photos of India Gate, give 'India Gate' exactly; for "
                             "another landmark, choose a name that differs in more (nothing was enrolled)\n")
    assert folder_state(made / "gidx") == before
    monkeypatch.undo()
    ok = runner.invoke(app, ["index", "add", str(made / "gidx"), "--images", str(made / "new.csv"),
                             "--label", "India Gate", "--workers", "0"])
    assert ok.exit_code == 0, ok.output
    assert (LandmarkIndex.load(made / "gidx").labels == "India_Gate").sum() == 4


def test_an_index_folder_that_cannot_be_written_is_refused_before_embedding(made, monkeypatch):
    """A read-only index folder: one line saying what to do, exit 2, before any photo is embedded
    (it was a PermissionError traceback). Simulated: the tests may run as root, whom chmod does not stop."""
    import errno
    from pathlib import Path
    folder = made / "idx"
    touch = Path.touch

    def denied(self, *args, **kwargs):
        if self.parent == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return touch(self, *args, **kwargs)
    monkeypatch.setattr(Path, "touch", denied)
    no_embedding(monkeypatch)
    before = folder_state(folder)
    result = add(made, "Versailles")
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"error: cannot write to the index folder {folder} (Permission denied): give an index "
                             f"folder you can write, or copy this one (cp -r {folder} COPY) and add to the copy\n")
    assert folder_state(folder) == before


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into a folder of mode 0555 (the test above simulates it)")
def test_a_read_only_index_folder_is_refused(made, monkeypatch):
    import os
    folder = made / "idx"
    no_embedding(monkeypatch)
    before = folder_state(folder)
    os.chmod(folder, 0o555)
    try:
        result = add(made, "Versailles")
    finally:
        os.chmod(folder, 0o755)
    assert result.exit_code == 2 and result.stderr.startswith(f"error: cannot write to the index folder {folder} "
                                                              f"(Permission denied)"), result.output
    assert folder_state(folder) == before


def test_a_failed_enrolment_leaves_the_folder_as_it_was(made, monkeypatch):
    before = folder_state(made / "idx")

    def crash(*args, **kwargs):
        raise RuntimeError("killed mid-calibration")
    monkeypatch.setattr(pipeline, "calibrate_enrolled", crash)
    result = add(made, "Versailles")
    assert isinstance(result.exception, RuntimeError)
    assert folder_state(made / "idx") == before


def test_an_enrolment_keeps_its_vectors_under_their_name(made):
    before = set(folder_state(made / "idx"))
    result = add(made, "Versailles")
    assert result.exit_code == 0, result.output
    new = set(folder_state(made / "idx")) - before
    assert {"npy", "ids.csv", "json"} <= {n.split(".", 1)[1] for n in new}, new
    assert all(n.startswith("added-") for n in new), new
    # and they load: the record names the files by their final names (it named the hidden staged
    # ones, so every added-*.npy was 'unfinished' to load_embeddings)
    from landmark.retrieval.embeddings import load_embeddings
    kept = load_embeddings(made / "idx" / next(n for n in new if n.endswith(".npy")))
    assert len(kept) == 4 and set(kept.labels) == {"Versailles"}
    assert np.isfinite(np.asarray(kept.vectors, dtype=np.float32)).all()
    # the same photos again: nothing added, so no second file either
    again = add(made, "Versailles")
    assert again.exit_code == 0 and '"added": 0' in again.output
    assert set(folder_state(made / "idx")) - before == new


def test_a_failure_after_the_index_took_the_photos_keeps_their_vectors(made, monkeypatch):
    """Ctrl-C (or a crash) while answers_changed is measured, after the index was saved with the
    new photos: the index keeps them, so their vectors keep their added-*.npy name (they were
    deleted as for a refused enrolment: an index holding photos whose vectors no file had)."""
    from landmark.retrieval.index import LandmarkIndex

    def interrupted(*args, **kwargs):
        def changes(*a, **k):
            raise KeyboardInterrupt
        return changes
    monkeypatch.setattr(recognizer, "answer_changes", interrupted)
    before = set(folder_state(made / "idx"))
    result = add(made, "Versailles")
    assert result.exit_code != 0
    index = LandmarkIndex.load(made / "idx")
    assert len(index) == 12 and (index.labels == "Versailles").sum() == 4   # saved before the interruption
    new = set(folder_state(made / "idx")) - before
    assert any(n.startswith("added-") and n.endswith(".npy") for n in new), new
    assert not any(n.startswith(".added-") for n in new), new


def test_two_enrolments_started_in_one_second_stage_apart(tmp_path):
    """Two index add started within a second (the service and the CLI, two shells): each stages
    under its own hidden name. Both took the same .added-STAMP.npy while the first was still
    embedding (nothing written under it yet), and the second, refused by the first's lock, then
    deleted the first's staged rows and lock file on its way out."""
    first = pipeline.StagedEnrolment(tmp_path)
    second = pipeline.StagedEnrolment(tmp_path)
    assert first.path != second.path and first.final != second.final
    first.path.write_bytes(b"rows being embedded")   # the first one's vectors, staged
    with second:
        pass   # refused, failed or added nothing: deletes its own staged files only
    assert first.path.read_bytes() == b"rows being embedded"
    with first:
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())
