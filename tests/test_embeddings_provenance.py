"""Every embeddings file, shard and index records the model that made its vectors, and every
reader refuses vectors of another model in one line (files without a record: a warning)."""
import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from landmark.cli import app
from landmark.models import create_model, save_checkpoint
from landmark.models.runtime import file_sha256
from landmark.retrieval.embeddings import labelled_images, load_embeddings
from landmark.retrieval.index import IndexParams, LandmarkIndex
from landmark.retrieval.pipeline import build_index, embed_checkpoint, enrol
from landmark.retrieval.provenance import ModelMismatch, ProvenanceWarning

PREPROCESS = {"size": 64, "resize": 72, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
runner = CliRunner()


@pytest.fixture(scope="module")
def made(l13, tmp_path_factory):
    """Two checkpoints of one architecture (different weights), 8 photos embedded by each,
    and an index of model a's vectors."""
    work = tmp_path_factory.mktemp("provenance")
    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        save_checkpoint(work / name, create_model("test_efficientnet", 3, weights="none").eval(), ["a", "b", "c"],
                        preprocess=PREPROCESS)
    frame = labelled_images(l13, ["9", "11"]).groupby("landmark_id").head(4).reset_index(drop=True)
    frame[["id", "path"]].to_csv(work / "photos.csv", index=False)
    infos = {}
    for name in ("a", "b"):
        _, _, infos[name] = embed_checkpoint(work / f"{name}.pt", frame, work / f"{name}.npy", workers=0,
                                             runtime="torch", dtype="float32")
    build_index(load_embeddings(work / "a.npy"), work / "idx", params=IndexParams(kind="flat"), model_info=infos["a"])
    return work


def fresh_index(made, tmp_path):
    shutil.copytree(made / "idx", tmp_path / "idx")
    return tmp_path / "idx"


def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


def test_embeddings_and_index_record_their_model(made, tmp_path):
    record = json.loads((made / "a.json").read_text())["model"]
    assert record["sha256"] == file_sha256(made / "a.pt") and record["image_size"] == 64
    assert record["mean"] == PREPROCESS["mean"] and record["backbone"] == "test_efficientnet"
    assert LandmarkIndex.load(made / "idx").meta["model"]["sha256"] == record["sha256"]
    # an index built from an embeddings file records the file's model (it recorded none before)
    result = runner.invoke(app, ["index", "build", "--embeddings", str(made / "a.npy"), "--out", str(tmp_path / "i2"),
                                 "--kind", "flat"])
    assert result.exit_code == 0, result.output
    assert LandmarkIndex.load(tmp_path / "i2").meta["model"]["sha256"] == record["sha256"]


def test_index_add_refuses_vectors_of_another_model(made, tmp_path):
    idx = fresh_index(made, tmp_path)
    line = one_error_line(runner.invoke(app, ["index", "add", str(idx), "--embeddings", str(made / "b.npy")]))
    assert "were made by model b.pt" in line and "this index by a.pt" in line and "re-embed" in line
    # from another checkpoint: refused before any photo is embedded
    line = one_error_line(runner.invoke(app, ["index", "add", str(idx), "--checkpoint", str(made / "b.pt"),
                                              "--images", str(made / "photos.csv"), "--label", "5",
                                              "--workers", "0"]))
    assert "were made by model b.pt" in line and not list(idx.glob("added-*.npy"))
    assert len(LandmarkIndex.load(idx)) == 8
    with pytest.raises(ModelMismatch):
        enrol(idx, load_embeddings(made / "b.npy"))
    # the index's own model is accepted (every photo already there: skipped)
    assert enrol(idx, load_embeddings(made / "a.npy"))["skipped_duplicates"] == 8


def test_knn_refuses_queries_nonlandmarks_and_checkpoint_of_another_model(made, tmp_path):
    base = ["knn", str(made / "a.pt"), "--index", str(made / "idx"), "--out", str(tmp_path / "s.csv"),
            "--workers", "0", "--runtime", "torch", "--scoring", "knn-vote"]   # query embeddings: the kNN vote
    line = one_error_line(runner.invoke(app, base + ["--images", str(made / "b.npy")]))
    assert "the queries of" in line and "were made by model b.pt" in line
    line = one_error_line(runner.invoke(app, base + ["--images", str(made / "a.npy"),
                                                     "--nonlandmarks", str(made / "b.npy")]))
    assert "the non-landmarks of" in line and "were made by model b.pt" in line
    base[1] = str(made / "b.pt")
    line = one_error_line(runner.invoke(app, base + ["--images", str(made / "photos.csv")]))
    assert "were made by model b.pt" in line and not (tmp_path / "s.queries.npy").exists()
    base[1] = str(made / "a.pt")
    result = runner.invoke(app, base + ["--images", str(made / "a.npy")])
    assert result.exit_code == 0, result.output


def test_shards_of_two_checkpoints_do_not_mix(made, tmp_path):
    out = tmp_path / "emb.shards"

    def shard(ckpt, i):
        return runner.invoke(app, ["embed", str(made / ckpt), "--images", str(made / "photos.csv"), "--out", str(out),
                                   "--shard", f"{i}/2", "--part-size", "2", "--workers", "0", "--runtime", "torch"])
    assert shard("a.pt", 0).exit_code == 0
    line = one_error_line(shard("b.pt", 1))
    assert "were made by model" in line and not (out / "part-00001").exists()
    # parts of two models in one folder (a manifest of an older version pinned no model): the merge refuses
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["model_sha256"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert shard("b.pt", 1).exit_code == 0
    line = one_error_line(runner.invoke(app, ["embed-merge", str(out), "--out", str(tmp_path / "all.npy")]))
    assert "were made by model" in line and not (tmp_path / "all.npy").exists()


def test_files_without_a_record_load_with_a_warning(made, tmp_path):
    for suffix in (".npy", ".ids.csv", ".rejects.csv", ".json"):
        shutil.copy(made / f"a{suffix}", tmp_path / f"old{suffix}")
    record = json.loads((tmp_path / "old.json").read_text())
    record = {k: v for k, v in record.items() if k not in ("model", "files", "version")}   # as main wrote it
    (tmp_path / "old.json").write_text(json.dumps(record))
    old = load_embeddings(tmp_path / "old.npy")
    assert old.model is None and np.array_equal(old.vectors, load_embeddings(made / "a.npy").vectors)
    with pytest.warns(ProvenanceWarning, match="no model recorded"):
        assert enrol(fresh_index(made, tmp_path), old)["skipped_duplicates"] == 8
    with pytest.warns(ProvenanceWarning, match="the queries of .*no model recorded"):
        result = runner.invoke(app, ["knn", str(made / "a.pt"), "--index", str(made / "idx"), "--images",
                                     str(tmp_path / "old.npy"), "--out", str(tmp_path / "s.csv"), "--runtime", "torch",
                                     "--scoring", "knn-vote"])
    assert result.exit_code == 0, result.output


def test_recognizer_refuses_an_index_of_another_checkpoint(made):
    from landmark import Recognizer
    with pytest.raises(ModelMismatch, match="were made by model b.pt .*this index by a.pt"):
        Recognizer.load(made / "b.pt", index=made / "idx", runtime="torch")
    assert len(Recognizer.load(made / "a.pt", index=made / "idx", runtime="torch").index) == 8
