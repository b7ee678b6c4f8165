"""The service refuses what would cost too much before decoding it, answers every refusal with
a 4xx and a JSON body naming the limit, and keeps one request's failure out of the others'
answers (issue 19, cases 2 and 3); on files made here and a real AVIF of the dirty set."""
import asyncio
import io
import struct

import numpy as np
import pytest
from PIL import Image

from _helpers import blank_png, tiny_recognizer
from conftest import DIRTY

AVIF = DIRTY / "32aad146-2d5a-49a3-b45e-462982af3cb1.jpg"   # AVIF RGB 626x626 (MANIFEST.csv)


def png(size, mode="RGB", colour=0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, "PNG")
    return buf.getvalue()



def jpeg(seed=0, size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def corrupt_avif() -> bytes:
    """A real AVIF with 64 bytes zeroed in the middle: libavif raises RuntimeError decoding it."""
    if not AVIF.is_file():
        pytest.skip(f"real data missing: {AVIF}")
    data = bytearray(AVIF.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(64)
    return bytes(data)


def dds_header() -> bytes:
    """A minimal DDS header with an unknown FourCC pixel format: Pillow raises NotImplementedError."""
    return (b"DDS " + struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + bytes(44)
            + struct.pack("<2I", 32, 0x4) + b"XXXX" + bytes(40))


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return tiny_recognizer(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def client(rec):
    from fastapi.testclient import TestClient

    from landmark.serving import create_app
    with TestClient(create_app(rec)) as c:
        yield c


@pytest.mark.parametrize("case, status, words", [
    ("corrupt avif", 400, "RuntimeError"),
    ("dds header", 400, "NotImplementedError"),
    ("1 x 39,000,000 png", 413, "a side over the limit of 30000 px"),
    ("1:25 png", 413, "aspect ratio 25:1 over the limit of 20:1: 5000x200 pixels is too wide"),
])
def test_undecodable_and_oversized_images_get_a_json_4xx(client, case, status, words):
    data = {"corrupt avif": corrupt_avif, "dds header": dds_header,
            "1 x 39,000,000 png": lambda: blank_png(1, 39_000_000),
            "1:25 png": lambda: png((5000, 200))}[case]()
    res = client.post("/v1/recognize", files=[("file", ("bad.img", data, "application/octet-stream")),
                                              ("file", ("good.jpg", jpeg(), "image/jpeg"))])
    assert res.status_code == status and res.headers["content-type"] == "application/json", res.text
    assert words in res.json()["error"] and res.json()["error"].startswith("bad.img: ")
    ok = client.post("/v1/recognize", files={"file": ("good.jpg", jpeg(), "image/jpeg")})
    assert ok.status_code == 200 and ok.json()["answers"][0]["landmark_id"] in ("a", "b")


def test_the_pixels_of_a_request_are_bounded_before_decoding(client, monkeypatch):
    import landmark.serving.app as app_module
    decoded = []
    monkeypatch.setattr(app_module, "decode_upload", lambda *a: decoded.append(a) or pytest.fail("decoded"))
    flat = blank_png(6000, 6600)   # single-colour, 39.6 Mpixel (under max_pixels) in 39 KB
    assert len(flat) < 60_000
    res = client.post("/v1/recognize", files=[("file", (f"{k}.png", flat, "image/png")) for k in range(16)])
    assert res.status_code == 413, res.text
    assert "16 images of 633.6 Mpixel together: over the limit of 100 Mpixel per request" in res.json()["error"]
    assert decoded == []


def test_a_failing_request_never_reaches_the_answer_of_one_batched_with_it(rec):
    """Two requests share a forward pass; the recogniser fails on one of them: the other gets 200."""
    import httpx

    from landmark.serving import create_app

    class Fussy:
        """The real recogniser, failing (as a forward pass out of memory would) on 'poison.jpg'."""
        def __getattr__(self, name):
            return getattr(rec, name)

        def recognize(self, photos, sources, **kw):
            calls.append(sorted(sources))
            if "poison.jpg" in sources:
                raise RuntimeError("out of memory")
            return rec.recognize(photos, sources=sources, **kw)

    calls = []
    app = create_app(Fussy(), window=0.5)

    async def both():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(
                c.post("/v1/recognize", files={"file": ("poison.jpg", jpeg(1), "image/jpeg")}),
                c.post("/v1/recognize", files={"file": ("good.jpg", jpeg(2), "image/jpeg")}))

    bad, good = asyncio.run(both())
    assert calls[0] == ["good.jpg", "poison.jpg"]   # they did share a forward pass
    assert good.status_code == 200, good.text
    expected = rec.recognize([jpeg(2)], sources=["good.jpg"])[0]
    answer = good.json()["answers"][0]
    assert answer["source"] == "good.jpg" and answer["landmark_id"] == expected.landmark_id
    np.testing.assert_allclose(answer["score"], expected.score, rtol=1e-4)
    assert bad.status_code == 500 and bad.json()["error"].startswith("internal error (RuntimeError)")


@pytest.mark.parametrize("name", ["..\u202egpj.exe", "a\u200bb.jpg", "x\x7f.jpg", "x\x9b2J.jpg"])
def test_upload_names_with_control_or_format_characters_are_refused(client, name):
    """The file name is echoed back as `source`: the landmark-name rule (data.names) applies to it too."""
    res = client.post("/v1/recognize", files={"file": (name, jpeg(), "image/jpeg")})
    assert res.status_code == 400
    assert "control character" in res.json()["error"]
    ok = client.post("/v1/recognize", files={"file": ("Mont Saint-Michel été.jpg", jpeg(), "image/jpeg")})
    assert ok.status_code == 200 and ok.json()["answers"][0]["source"] == "Mont Saint-Michel été.jpg"
