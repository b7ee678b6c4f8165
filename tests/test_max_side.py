"""Aspect-kept global descriptors (`landmark embed/index build --max-side S`): the whole photo, its
longer side S px, neither cropped nor squashed; the index records it and its queries follow it."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from landmark.cli import app
from landmark.data.images import load_uint8
from landmark.data.preprocess import Preprocess
from landmark.data.transforms import LongerSide, resize_longer_uint8
from _helpers import tiny_checkpoint
from landmark.retrieval.embeddings import embed_images, labelled_images
from landmark.retrieval.index import LandmarkIndex
from landmark.retrieval.provenance import ModelMismatch, check_model, model_record, same_model

PREPROCESS = {"size": 64, "resize": 72, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
runner = CliRunner()


def test_longer_side_keeps_the_aspect_ratio():
    landscape = torch.zeros(3, 300, 400, dtype=torch.uint8)
    assert LongerSide(448)(landscape).shape == (3, 336, 448)          # enlarged: every photo at one scale
    assert LongerSide(64)(torch.zeros(3, 500, 250, dtype=torch.uint8)).shape == (3, 64, 32)
    assert LongerSide(10)(torch.zeros(3, 1, 1000, dtype=torch.uint8)).shape == (3, 1, 10)   # at least 1 px
    grey = torch.full((3, 30, 40), 77, dtype=torch.uint8)
    out = resize_longer_uint8(20)(grey)
    assert out.dtype == torch.uint8 and out.shape == (3, 15, 20) and int(out.min()) == int(out.max()) == 77


def test_model_records_differ_by_max_side():
    square = model_record("a.pt", "f" * 64, PREPROCESS, image_size=96)
    kept = model_record("a.pt", "f" * 64, PREPROCESS, max_side=96)
    assert kept["image_size"] == 96 and kept["max_side"] == 96 and "max_side" not in square
    assert not same_model(square, kept) and same_model(kept, dict(kept))
    with pytest.raises(ModelMismatch, match="longer side 96 px"):
        check_model(square, kept, "the queries", "this index", fix="embed them with --max-side 96")


@pytest.fixture(scope="module")
def made(l13, tmp_path_factory):
    work = tmp_path_factory.mktemp("max_side")
    model = tiny_checkpoint(work / "a.pt", PREPROCESS)
    frame = labelled_images(l13, ["9", "11"]).groupby("landmark_id").head(3).reset_index(drop=True)
    return work, model, frame


def test_embedding_pools_the_whole_aspect_kept_photo(made):
    work, model, frame = made
    emb, rejects = embed_images(model, PREPROCESS, frame, work / "kept.npy", max_side=96, dtype="float32", workers=0)
    square, _ = embed_images(model, PREPROCESS, frame, work / "square.npy", image_size=96, dtype="float32", workers=0)
    vectors = np.asarray(emb.vectors)
    assert not rejects and vectors.shape == (6, model.embed(torch.zeros(1, 3, 64, 64)).shape[1])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    record = json.loads((work / "kept.json").read_text())
    assert record["max_side"] == 96 and record["image_size"] == 96
    # the first photo by hand: longer side 96 px, aspect kept, through the model, normalised
    photo = load_uint8(frame["path"].iloc[0], draft=2 * 96)
    h, w = photo.shape[-2:]
    resized = LongerSide(96)(photo)
    assert max(resized.shape[-2:]) == 96 and abs(resized.shape[-1] / resized.shape[-2] - w / h) < 0.02
    assert resized.shape[-1] != resized.shape[-2]    # a landscape or portrait photo, not a square
    x = Preprocess.of(PREPROCESS).finish_batch(resized[None])
    with torch.no_grad():
        expected = F.normalize(model.embed(x), dim=1)[0].numpy()
    np.testing.assert_allclose(vectors[0], expected, atol=1e-5)
    # and it is not the squashed square's descriptor
    assert float(vectors[0] @ np.asarray(square.vectors)[0]) < 0.9999
    with pytest.raises(ValueError, match="give one"):
        embed_images(model, PREPROCESS, frame, work / "both.npy", image_size=96, max_side=96, workers=0)


@pytest.mark.slow
def test_index_records_max_side_and_queries_follow_it(made, l13, tmp_path):
    work, _, frame = made
    idx = tmp_path / "idx"
    done = runner.invoke(app, ["index", "build", "--checkpoint", str(work / "a.pt"), "--data", str(l13),
                               "--landmarks", "9,11", "--max-side", "96", "--out", str(idx), "--kind", "flat",
                               "--workers", "0"])
    assert done.exit_code == 0, done.output
    built = LandmarkIndex.load(idx).meta["model"]
    assert built["max_side"] == 96 and built["image_size"] == 96
    items = pd.read_csv(idx / "items.csv", dtype=str)
    queries = tmp_path / "q.csv"
    pd.DataFrame({"id": ["self"], "path": [items["path"].iloc[2]]}).to_csv(queries, index=False)
    out = tmp_path / "retrieval.csv"
    done = runner.invoke(app, ["retrieve", str(queries), "--index", str(idx), "--out", str(out), "--top-k", "3",
                               "--qe", "0", "--dba", "0", "--diffusion", "0", "--json", "--workers", "0"])
    assert done.exit_code == 0, done.output
    answers = json.loads(done.stdout[done.stdout.index("["):])
    first = answers[0]["images"][0]
    assert first["id"] == items["id"].iloc[2]
    assert first["similarity"] == pytest.approx(1.0, abs=2e-3)   # embedded exactly as the index photo was
    assert json.loads(out.with_name("retrieval.queries.json").read_text())["max_side"] == 96
    # the kNN vote embeds its queries the same way; the default knn scoring (one square pass) refuses the index
    sub = tmp_path / "knn" / "submission.csv"
    done = runner.invoke(app, ["knn", str(work / "a.pt"), "--index", str(idx), "--images", str(queries),
                               "--out", str(sub), "--scoring", "knn-vote", "--workers", "0"])
    assert done.exit_code == 0, done.output
    assert json.loads(sub.with_name("submission.queries.json").read_text())["max_side"] == 96
    done = runner.invoke(app, ["knn", str(work / "a.pt"), "--index", str(idx), "--images", str(queries),
                               "--out", str(tmp_path / "knn2.csv"), "--workers", "0"])
    assert done.exit_code == 2 and "longer side is 96 px" in done.output
    # square vectors of the same checkpoint are another model for this index
    square, _ = embed_images(made[1], PREPROCESS, frame, tmp_path / "sq.npy", image_size=96, workers=0,
                             model_info=model_record(work / "a.pt", built["sha256"], PREPROCESS, image_size=96))
    done = runner.invoke(app, ["index", "add", str(idx), "--embeddings", str(tmp_path / "sq.npy")])
    assert done.exit_code == 2 and "longer side 96 px" in done.output
