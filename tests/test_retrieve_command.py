"""`landmark retrieve` on a tiny real index (24 landmarks13 photos, ImageNet lite0 at 128 px): the
Kaggle retrieval submission, --json, the same photos from Recognizer.retrieve and POST /v1/retrieve."""
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import PHOTO
from landmark.cli import app
from landmark.data import image_path
from landmark.data.kaggle import read_retrieval_submission

pytestmark = pytest.mark.slow   # embeds photos (~20 s on a loaded 2-core machine)


@pytest.fixture(scope="module")
def queries(recognizer_index, l13, tmp_path_factory) -> Path:
    """Two queries: a photo of the index itself (it must come first, similarity 1) and a test photo."""
    items = pd.read_csv(recognizer_index / "items.csv", dtype=str)
    csv = tmp_path_factory.mktemp("queries") / "queries.csv"
    pd.DataFrame({"id": ["self", "test"], "path": [items["path"].iloc[3], str(image_path(l13, PHOTO, "test"))]}
                 ).to_csv(csv, index=False)
    return csv


@pytest.fixture(scope="module")
def retrieved(recognizer_index, queries, tmp_path_factory):
    out = tmp_path_factory.mktemp("retrieve") / "retrieval.csv"
    done = CliRunner().invoke(app, ["retrieve", str(queries), "--index", str(recognizer_index), "--out", str(out),
                                    "--top-k", "5", "--json", "--workers", "0"])
    assert done.exit_code == 0, done.output
    return out, json.loads(done.stdout[done.stdout.index("["):])


def test_submission_and_json(recognizer_index, retrieved):
    out, answers = retrieved
    assert out.read_text().splitlines()[0] == "id,images"
    ranked = read_retrieval_submission(out)
    items = pd.read_csv(recognizer_index / "items.csv", dtype=str)
    assert list(ranked) == ["self", "test"] and all(len(ids) == 5 for ids in ranked.values())
    assert set(ranked["test"]) <= set(items["id"]) and len(set(ranked["test"])) == 5
    assert ranked["self"][0] == items["id"].iloc[3]
    by_id = {a["id"]: a for a in answers}
    assert [i["id"] for i in by_id["test"]["images"]] == ranked["test"]
    scores = [i["score"] for i in by_id["self"]["images"]]
    assert scores[0] > 0.9 and scores == sorted(scores, reverse=True)   # alpha-QE (default): not exactly 1
    assert by_id["self"]["images"][0]["path"] == items["path"].iloc[3]
    assert by_id["self"]["images"][0]["similarity"] == pytest.approx(1.0, abs=2e-3)   # the photo itself: cosine 1
    assert all(-1.0 <= i["similarity"] <= 1.001 for a in answers for i in a["images"])
    assert out.with_name("retrieval.queries.npy").is_file()


def test_recognizer_and_service_return_the_same_photos(recognizer_run, recognizer_index, l13, retrieved):
    from fastapi.testclient import TestClient

    from landmark import Recognizer
    from landmark.serving import create_app
    _, answers = retrieved
    expected = [i["id"] for i in {a["id"]: a for a in answers}["test"]["images"]]
    rec = Recognizer.load(recognizer_run, index=recognizer_index)
    photo = image_path(l13, PHOTO, "test")
    near, = rec.retrieve(photo, top_k=5)
    assert [n.id for n in near] == expected
    cli_similarity = [i["similarity"] for i in {a["id"]: a for a in answers}["test"]["images"]]
    assert [n.similarity for n in near] == pytest.approx(cli_similarity, abs=1e-3)   # one "how alike" for both
    with TestClient(create_app(rec)) as client:
        found = client.post("/v1/retrieve?top_k=5", files={"file": ("p.jpg", photo.read_bytes(), "image/jpeg")})
        assert found.status_code == 200, found.text
        result, = found.json()["results"]
        assert [i["id"] for i in result["images"]] == expected and "path" not in result["images"][0]
    with TestClient(create_app(Recognizer.load(recognizer_run, index=False))) as client:
        refused = client.post("/v1/retrieve", files={"file": ("p.jpg", photo.read_bytes(), "image/jpeg")})
        assert refused.status_code == 409 and "--index" in refused.text
