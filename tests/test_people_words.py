"""What a person reads: landmark names made readable from folder names (one function, used by every
answer), sureness in words from one mapping, and the web page showing the name and words first,
details folded away, reference photos as pictures served by id from the index only."""
import io
from pathlib import Path

import pytest
from PIL import Image

from _helpers import open_page, serve_in_thread
from conftest import PHOTO
from landmark.data import image_path
from landmark.data.names import display_name, pretty_name
from landmark.inference.words import NOT_SURE_FRACTION, certainty, sentence


@pytest.mark.parametrize("folder, shown", [
    ("hue_imperial_city", "Hue Imperial City"), ("eiffel  tower", "Eiffel Tower"),
    ("st-paul's_cathedral", "St-Paul's Cathedral"), ("Piazza_San_Marco", "Piazza San Marco"),
    ("McDonald's", "McDonald's"), ("12345", "12345"), ("x", "X")])
def test_pretty_name(folder, shown):
    assert pretty_name(folder) == shown


def test_display_name_prefers_a_stored_name():
    assert display_name("hue_imperial_city") == "Hue Imperial City"
    assert display_name("hue_imperial_city", "hue_imperial_city") == "Hue Imperial City"   # folder trees store the id
    assert display_name("3", "Angkor Wat") == "Angkor Wat"
    assert display_name("x", "Piazza \x1b[2J") == "Piazza \\x1b[2J"   # still escaped for terminals


def test_certainty_words():
    assert certainty(0.40, 0.30, True) == "probably"
    assert certainty(0.30 * NOT_SURE_FRACTION, 0.30, False) == "not sure"
    assert certainty(0.29, 0.30, False) == "not sure"
    assert certainty(0.14, 0.30, False) == "no landmark"
    assert certainty(0.0, 0.0, False) == "no landmark"
    assert sentence("Petra", 0.9, 0.3, True) == "probably Petra"
    assert sentence("Petra", 0.2, 0.3, False) == "not sure: maybe Petra"
    assert sentence("Petra", 0.01, 0.3, False) == "no landmark"


def test_answers_carry_names_and_words(rec, l13):
    """The recogniser names a folder-tree class through display_name, and says how sure it is."""
    answer, = rec.recognize(image_path(l13, PHOTO, "test"))
    assert answer.words == sentence(answer.name, answer.score, answer.threshold, answer.is_landmark)
    assert answer.certainty == certainty(answer.score, answer.threshold, answer.is_landmark)
    assert answer.model_dump()["words"] == answer.words
    saved = dict(rec.names)
    try:
        rec.names["0"] = "0"                    # a folder tree's class, stored as its folder name
        rec.names.pop("1")
        assert rec.name("hue_imperial_city") == "Hue Imperial City" and rec.name("0") == "0"
        assert rec.name("1") == "1"
    finally:
        rec.names.clear()
        rec.names.update(saved)


@pytest.fixture(scope="module")
def indexed(recognizer_run, recognizer_index):
    from landmark import Recognizer
    return Recognizer.load(recognizer_run, index=recognizer_index)


@pytest.fixture(scope="module")
def client(indexed):
    from fastapi.testclient import TestClient

    from landmark.serving import create_app
    with TestClient(create_app(indexed)) as c:
        yield c


@pytest.mark.slow
def test_reference_thumbnails_by_id_only(client, indexed, l13):
    from landmark.serving.app import THUMBNAIL_SIDE
    photo = image_path(l13, PHOTO, "test")
    res = client.post("/v1/recognize", files={"file": ("p.jpg", photo.read_bytes(), "image/jpeg")})
    answer = res.json()["answers"][0]
    assert answer["words"] and answer["certainty"] in ("probably", "not sure", "no landmark")
    near = answer["neighbours"][0]
    assert "path" not in near
    thumb = client.get(f"/v1/references/{near['id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(thumb.content))
    row = indexed.index.items.set_index("id").loc[near["id"]]
    with Image.open(row["path"]) as original:
        assert max(picture.size) == min(THUMBNAIL_SIDE, max(original.size))
    for bad in ["nope", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", str(Path(row["path"]).name)]:
        refused = client.get(f"/v1/references/{bad}/thumbnail")
        assert refused.status_code == 404 and "image" not in refused.headers["content-type"], bad


@pytest.mark.slow
def test_nearest_photos_come_from_the_retrieval_and_are_served_by_id_only(client, indexed, l13):
    """Issue 22 on the web page: the page asks POST /v1/retrieve for the nearest photos; every id it
    returns (those of Recognizer.retrieve) is served as a JPEG thumbnail; paths, file names and ids not
    in the index get a 404, never a file."""
    page = client.get("/").text
    assert "v1/retrieve?top_k=" in page and "Nearest photos in the index" in page
    photo = image_path(l13, PHOTO, "test")
    res = client.post("/v1/retrieve?top_k=6", files={"file": ("p.jpg", photo.read_bytes(), "image/jpeg")})
    assert res.status_code == 200, res.text
    images = res.json()["results"][0]["images"]
    assert [n["id"] for n in images] == [n.id for n in indexed.retrieve(photo, top_k=6)[0]] and len(images) == 6
    assert all(set(n) == {"id", "landmark_id", "name", "similarity"} for n in images)   # no server paths
    # each photo's own cosine similarity to the query, not the diffusion's score divided by the best
    # (which read 1.0, "100% alike", for every query's first photo)
    from landmark.data.images import load_image
    near = indexed.retrieve(photo, top_k=6)[0]
    query = indexed.index.transform(indexed.embed([load_image(photo)]))[0]
    rows = indexed.index.items.reset_index(drop=True).reset_index().set_index("id").loc[[n.id for n in near], "index"]
    cosines = indexed.index.stored(rows.to_numpy()) @ query
    assert [n.similarity for n in near] == pytest.approx(cosines.tolist(), abs=1e-4)
    assert max(n.similarity for n in near) < 0.999   # a test photo is not in the index
    assert [n["similarity"] for n in images] == pytest.approx(cosines.tolist(), abs=1e-4)
    # a "no landmark" answer's photos are not "photos of" it; trained and enrolled landmarks counted apart
    assert "not close enough to name it" in page and "a.is_landmark ? \"Looks like these photos of" in page
    assert "landmarks known to the classifier" in page and "enrolled by photos" in page
    for n in images:
        thumb = client.get(f"/v1/references/{n['id']}/thumbnail")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg", n
        assert Image.open(io.BytesIO(thumb.content)).format == "JPEG"
    indexed_path = indexed.index.items.set_index("id").loc[images[0]["id"], "path"]
    from urllib.parse import quote
    for bad in [quote(str(photo), safe=""), quote(str(indexed_path), safe=""), Path(indexed_path).name, "..", "0",
                quote("../" + images[0]["id"], safe=""), images[0]["id"] + ".jpg"]:
        refused = client.get(f"/v1/references/{bad}/thumbnail")
        assert 400 <= refused.status_code < 500 and "image" not in refused.headers["content-type"], bad
    assert client.post(f"/v1/references/{images[0]['id']}/thumbnail").status_code == 405


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
def test_web_page_words_first_details_folded(indexed, l13, tmp_path):
    """The page shows the verdict and its words, the reference photos and the nearest photos of the
    index as pictures (not ids), and keeps the numbers in closed <details>; no console error, no
    broken picture."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is not installed (make browser)")
    from landmark.serving import create_app
    indexed.threshold, old = 0.0, indexed.threshold   # a landmark answer: its reference photos are shown
    # a test photo whose answer has indexed photos of its own landmark among its neighbours (the
    # fixture's head is random, so which photos those are is found, not assumed)
    tests = sorted((l13 / "test").rglob("*.jpg"))[:40]
    photo = next((p for p in tests if any(n.landmark_id == a.landmark_id for a in indexed.recognize(p, top_k=3)
                                          for n in a.neighbours)), None)
    assert photo is not None, "no test photo among 40 has a neighbour of its answer's landmark"
    try:
        with serve_in_thread(create_app(indexed)) as port:
            expected = indexed.recognize(photo, top_k=3)[0]   # the page asks for 3
            errors = []
            with playwright.sync_playwright() as p:
                browser, page = open_page(p, CHROMIUM, errors)
                page.goto(f"http://127.0.0.1:{port}/")
                page.set_input_files("#pick", str(photo))
                page.wait_for_selector(".card[data-done='1']", timeout=60_000)
                assert page.inner_text(".card .verdict") == expected.verdict
                assert page.inner_text(".card .words").lower() == expected.words.lower()
                assert page.evaluate("document.querySelector('.card details').open") is False
                assert page.locator(".card details").get_by_text("score").count() == 1
                same = [n for n in expected.neighbours if n.landmark_id == expected.landmark_id][:3]
                assert page.locator(".references img").count() == len(same) > 0
                page.wait_for_function("Array.from(document.images).every(i => i.complete)")
                broken = page.evaluate("Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.alt)")
                assert not broken, broken
                visible = page.inner_text(".card .info")
                assert all(n.id not in visible for n in expected.neighbours)   # pictures, not ids
                # the nearest photos of the index (the retrieval of POST /v1/retrieve) as named pictures
                near = indexed.retrieve(photo, top_k=6)[0]
                assert page.locator(".nearest img").count() == len(near) > 0
                captions = page.locator(".nearest figcaption").all_inner_texts()
                assert [c.splitlines()[0] for c in captions] == [n.name for n in near]
                assert all(c.endswith("alike") for c in captions)
                assert page.evaluate("document.querySelector('.card details.nearest-numbers').open") is False
                assert all(n.id not in visible for n in near)
                page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
                browser.close()
            assert not errors, errors
    finally:
        indexed.threshold = old
