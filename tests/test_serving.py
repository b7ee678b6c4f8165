"""landmark serve's application through FastAPI's test client on real photos: answers equal
the library's, every hostile upload of issue 9 gets a clear 4xx and the server keeps serving,
enrolment of a new landmark survives a restart; and the web page in headless Chromium."""
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _helpers import open_page, serve_in_thread
from conftest import DIRTY, NEW_LANDMARK, PHOTO, TOKEN
from landmark.data import image_path

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def client(rec):
    from fastapi.testclient import TestClient

    from landmark.serving import Limits, create_app
    app = create_app(rec, token=TOKEN, limits=Limits(max_bytes=2 * 2**20, max_pixels=40_000_000))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def photo(l13) -> Path:
    return image_path(l13, PHOTO, "test")


def png_header(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` pixels with one empty IDAT chunk (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_answers_equal_the_library(client, rec, photo, l13):
    other = image_path(l13, "104960ab8aabc137", "test")
    res = client.post("/v1/recognize?top_k=2", files=[("file", ("a.jpg", photo.read_bytes(), "image/jpeg")),
                                                      ("file", ("b.jpg", other.read_bytes(), "image/jpeg"))])
    assert res.status_code == 200, res.text
    answers = res.json()["answers"]
    direct = rec.recognize([photo, other], top_k=2)
    assert [a["source"] for a in answers] == ["a.jpg", "b.jpg"]
    assert [a["landmark_id"] for a in answers] == [d.landmark_id for d in direct]
    np.testing.assert_allclose([a["score"] for a in answers], [d.score for d in direct], rtol=1e-4)
    assert answers[0]["name"] == rec.name(answers[0]["landmark_id"]) and len(answers[0]["top_k"]) == 2
    assert answers[0]["verdict"] in (answers[0]["name"], "no landmark")
    raw = client.post("/v1/recognize", content=photo.read_bytes(), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200 and raw.json()["answers"][0]["landmark_id"] == direct[0].landmark_id
    landmarks = client.get("/v1/landmarks").json()["landmarks"]
    assert {"landmark_id": "12", "name": "Taj Mahal", "in_classifier": True, "references": 0} in landmarks
    assert client.get("/health").json()["status"] == "ok"
    assert "Which landmark" in client.get("/").text and "cdn" not in client.get("/").text.lower()
    spec = client.get("/openapi.json").json()
    assert "multipart/form-data" in spec["paths"]["/v1/recognize"]["post"]["requestBody"]["content"]
    assert set(spec["components"]["schemas"]["PublicNeighbour"]["properties"]) == {"id", "landmark_id", "name",
                                                                                  "similarity"}
    assert client.get("/docs").status_code == 200


def test_explain_returns_pictures(client, photo):
    res = client.post("/v1/recognize?explain=1", files={"file": ("p.jpg", photo.read_bytes(), "image/jpeg")})
    assert res.status_code == 200
    explained = res.json()["answers"][0]["explain"]
    assert explained["saliency"].startswith("data:image/png;base64,") and explained["matches"] is None


@pytest.mark.parametrize("case, status, message", [
    ("empty body", 400, "empty body"),
    ("empty file", 400, "empty file"),
    ("text named .jpg", 415, "not an image"),
    ("truncated jpeg", 400, "truncated"),
    ("png 30000x30000", 413, "too large"),
    ("over the cap", 413, "over the limit"),
    ("over the cap, chunked", 413, "over the limit"),
    ("filename ../", 400, "looks like a path"),
    ("wrong field", 400, "'file'"),
    ("bad top_k", 422, "top_k"),
])
def test_hostile_uploads_get_a_clear_4xx_and_the_server_keeps_serving(client, photo, case, status, message):
    big = b"\xff\xd8" + bytes(3 * 2**20)
    requests = {
        "empty body": dict(content=b""),
        "empty file": dict(files={"file": ("e.jpg", b"", "image/jpeg")}),
        "text named .jpg": dict(files={"file": ("t.jpg", (DIRTY / "synthetic_html_page.jpg").read_bytes(),
                                                "image/jpeg")}),
        "truncated jpeg": dict(files={"file": ("t.jpg", (DIRTY / "synthetic_truncated_half.jpg").read_bytes(),
                                               "image/jpeg")}),
        "png 30000x30000": dict(files={"file": ("bomb.png", png_header(30000, 30000), "image/png")}),
        "over the cap": dict(content=big),
        "over the cap, chunked": dict(content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)])),
        "filename ../": dict(files={"file": ("../../etc/passwd", photo.read_bytes(), "image/jpeg")}),
        "wrong field": dict(files={"photo": ("p.jpg", photo.read_bytes(), "image/jpeg")}),
        "bad top_k": dict(content=photo.read_bytes()),
    }
    url = "/v1/recognize?top_k=0" if case == "bad top_k" else "/v1/recognize"
    res = client.post(url, **requests[case])
    assert res.status_code == status, res.text
    assert message in res.json()["error"]
    ok = client.post("/v1/recognize", files={"file": ("p.jpg", photo.read_bytes(), "image/jpeg")})
    assert ok.status_code == 200 and ok.json()["answers"][0]["landmark_id"]


def test_enrolment_needs_the_token_and_an_index(client, photo):
    files = {"file": ("p.jpg", photo.read_bytes(), "image/jpeg")}
    res = client.post("/v1/landmarks/42/images", files=files)
    assert res.status_code == 401 and "Bearer" in res.json()["error"]
    res = client.post("/v1/landmarks/42/images", files=files, headers={"Authorization": "Bearer wrong"})
    assert res.status_code == 403 and res.json()["error"] == "wrong token"
    res = client.post("/v1/landmarks/42/images", files=files, headers={"Authorization": f"Bearer {TOKEN}"})
    assert res.status_code == 409 and "--index" in res.json()["error"]  # this app has no index


def test_enrol_a_new_landmark_then_recognise_it_and_restart(recognizer_run, recognizer_index, l13, tmp_path):
    from fastapi.testclient import TestClient

    from landmark import Recognizer
    from landmark.serving import create_app
    new = "versailles"   # photos of landmarks13's NEW_LANDMARK, under an id the classifier does not have
    folder = tmp_path / "idx"
    shutil.copytree(recognizer_index, folder)
    train = pd.read_csv(l13 / "train.csv", dtype=str)
    enrol = sorted(train.loc[train["landmark_id"] == NEW_LANDMARK, "id"])[:12]
    solution = pd.read_csv(l13 / "test" / "recognition_solution.csv", dtype=str, keep_default_na=False)
    queries = [image_path(l13, i, "test") for i in solution.loc[solution["landmarks"] == NEW_LANDMARK, "id"]]
    assert len(queries) == 5

    def recognise(c) -> list[dict]:
        res = c.post("/v1/recognize", files=[("file", (q.name, q.read_bytes(), "image/jpeg")) for q in queries])
        assert res.status_code == 200, res.text
        return res.json()["answers"]

    app = create_app(Recognizer.load(recognizer_run, index=folder), token=TOKEN, index_dir=folder)
    with TestClient(app) as c:
        assert not any(a["landmark_id"] == new for a in recognise(c))  # never seen
        files = [("file", (f"{i}.jpg", image_path(l13, i).read_bytes(), "image/jpeg")) for i in enrol]
        res = c.post(f"/v1/landmarks/{new}/images", files=files, data={"name": "Versailles"},
                     headers={"Authorization": f"Bearer {TOKEN}"})
        assert res.status_code == 200, res.text
        reply = res.json()
        assert {k: reply[k] for k in ("landmark_id", "name", "added", "skipped_duplicates", "references")} == {
            "landmark_id": new, "name": "Versailles", "added": 12, "skipped_duplicates": 0, "references": 12}
        assert reply["coverage"]["photos"] == 12 and reply["threshold"] >= c.app.state.recognizer.threshold
        again = c.post(f"/v1/landmarks/{new}/images", files=files[:2],
                       headers={"Authorization": f"Bearer {TOKEN}"})
        assert again.json()["added"] == 0 and again.json()["skipped_duplicates"] == 2
        after = recognise(c)
    hits = [a for a in after if a["landmark_id"] == new]
    assert len(hits) >= 3, [(a["landmark_id"], a["score"]) for a in after]
    assert all(a["name"] == "Versailles" for a in hits) and "path" not in hits[0]["neighbours"][0]
    assert sorted(p.name for p in (folder / "enrolled").iterdir()) == sorted(
        f"{__import__('hashlib').sha256(image_path(l13, i).read_bytes()).hexdigest()[:16]}.jpg" for i in enrol)
    assert not list(folder.glob("*.tmp"))
    # a restart: a new app from the saved index knows the landmark, its name and its photos
    app = create_app(Recognizer.load(recognizer_run, index=folder), token=TOKEN, index_dir=folder)
    with TestClient(app) as c:
        assert [a["landmark_id"] for a in recognise(c)] == [a["landmark_id"] for a in after]
        known = {x["landmark_id"]: x for x in c.get("/v1/landmarks").json()["landmarks"]}
        assert known[new] == {"landmark_id": new, "name": "Versailles", "in_classifier": False,
                                       "references": 12}
        hit = next(q for q, a in zip(queries, after) if a["landmark_id"] == new)
        explained = c.post("/v1/recognize?explain=1", files={"file": ("q.jpg", hit.read_bytes(), "image/jpeg")})
        found = explained.json()["answers"][0]["explain"]
        assert found["matches"].startswith("data:image/png;base64,") and found["reference_id"] and found["inliers"] >= 0


def test_concurrent_requests_are_batched(rec, photo):
    import asyncio

    import httpx

    from landmark.serving import create_app
    app = create_app(rec, window=0.05)

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            replies = await asyncio.gather(*[c.post("/v1/recognize", content=photo.read_bytes()) for _ in range(6)])
            return replies, (await c.get("/health")).json()

    replies, health = asyncio.run(burst())
    assert all(r.status_code == 200 for r in replies)
    scores = [r.json()["answers"][0]["score"] for r in replies]
    np.testing.assert_allclose(scores, scores[0], rtol=1e-5)  # batch size changes the last bits only
    assert health["batches"] < 6  # six requests, fewer forward passes


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def onnx_rec(recognizer_run, l13, tmp_path_factory):
    """The recogniser of a bare .onnx export of the same checkpoint: no PyTorch network, so no saliency."""
    from landmark import Recognizer
    from landmark.inference.export import export_onnx
    photos = tmp_path_factory.mktemp("verify") / "photos.csv"
    files = sorted((l13 / "test").rglob("*.jpg"))[:4]
    pd.DataFrame({"id": [f.stem for f in files], "path": [str(f) for f in files]}).to_csv(photos, index=False)
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(recognizer_run / "checkpoints" / "best.pt", out, images=photos, verify_images=4, threads=1)
    return Recognizer.load(out)


@pytest.mark.parametrize("served", ["checkpoint", "bare onnx"])
def test_web_page_in_headless_chromium(rec, onnx_rec, photo, tmp_path, served):
    """Upload a real photo through the page; the answer's name shows; no console error or broken
    image; the saliency picture with the checkpoint, none (and no refusal) with a bare .onnx."""
    if served == "bare onnx":
        rec = onnx_rec
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is not installed (make browser)")
    from landmark.serving import create_app
    with serve_in_thread(create_app(rec)) as port:
        expected = rec.recognize(photo)[0]
        errors = []
        with playwright.sync_playwright() as p:
            browser, page = open_page(p, CHROMIUM, errors)
            page.on("requestfailed", lambda r: errors.append(f"failed {r.url}"))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('status').textContent.includes('landmarks known')")
            page.set_input_files("#pick", str(photo))
            page.wait_for_selector(".card[data-done='1']", timeout=60_000)
            verdict = page.inner_text(".card .verdict")
            assert verdict == expected.verdict
            page.wait_for_function("Array.from(document.images).every(i => i.complete)")
            broken = page.evaluate("Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.alt)")
            assert not broken, broken
            assert page.locator("figure.saliency img").count() == (1 if served == "checkpoint" else 0)
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            browser.close()
        assert not errors, errors


def folder_state(folder: Path) -> dict:
    """Every file under ``folder`` and its bytes (the writers' lock file: only its name, it holds a pid)."""
    return {p.relative_to(folder): b"" if p.name == ".lock" else p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_enrolling_a_name_alike_a_known_landmarks_is_refused(recognizer_run, recognizer_index, l13, tmp_path):
    """POST /v1/landmarks/petra/images with name 'petra  JORDAN' beside the index's 'Petra Jordan'
    (landmark 11): 409 in one line naming both, the index unchanged (the ValueError was a 500)."""
    from fastapi.testclient import TestClient

    from landmark import Recognizer
    from landmark.serving import create_app
    folder = tmp_path / "idx"
    shutil.copytree(recognizer_index, folder)
    before = (folder / "items.csv").read_bytes()
    state = folder_state(folder)
    app = create_app(Recognizer.load(recognizer_run, index=folder), token=TOKEN, index_dir=folder)
    photo = image_path(l13, PHOTO, "test").read_bytes()
    with TestClient(app) as c:
        res = c.post("/v1/landmarks/petra/images", files=[("file", ("a.jpg", photo, "image/jpeg"))],
                     data={"name": "petra  JORDAN"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert res.status_code == 409, res.text
    assert res.json()["error"].startswith("'petra  JORDAN' differs from 'Petra Jordan', a landmark this index "
                                          "already has, only in case, '_' or spaces: to add photos of Petra Jordan, "
                                          "give its id '11' exactly")
    assert (folder / "items.csv").read_bytes() == before
    # nothing left behind: the refused photo's JPEG in enrolled/ (it was kept) nor the folder; meta.json as it was
    assert folder_state(folder) == state
    assert not (folder / "enrolled").exists()


def test_a_failure_after_the_index_took_the_photos_keeps_them(recognizer_run, recognizer_index, l13, tmp_path):
    """answers_changed failing after the index was saved with the new photos: their JPEGs in
    enrolled/ stay (items.csv points at them; they were deleted as for a refused enrolment), the
    answer is no 409 'refused' (the index did change), and the server answers over the saved index."""
    from fastapi.testclient import TestClient

    from landmark import Recognizer
    from landmark.retrieval.index import LandmarkIndex
    from landmark.serving import create_app
    folder = tmp_path / "idx"
    shutil.copytree(recognizer_index, folder)
    rec = Recognizer.load(recognizer_run, index=folder)

    def broken(*args, **kwargs):
        raise ValueError("measuring answers_changed failed")
    rec.enrolment_changes = broken
    app = create_app(rec, token=TOKEN, index_dir=folder)
    photo = image_path(l13, PHOTO, "test").read_bytes()
    with TestClient(app, raise_server_exceptions=False) as c:
        res = c.post(f"/v1/landmarks/{NEW_LANDMARK}/images", files=[("file", ("a.jpg", photo, "image/jpeg"))],
                     headers={"Authorization": f"Bearer {TOKEN}"})
    assert res.status_code != 409, res.text
    saved = LandmarkIndex.load(folder)
    paths = saved.items.loc[saved.items["landmark_id"].astype(str) == NEW_LANDMARK, "path"].tolist()
    assert len(paths) == 1 and all(Path(p).is_file() for p in paths), paths
    assert len(rec.index) == len(saved)   # the server's index is the saved one
