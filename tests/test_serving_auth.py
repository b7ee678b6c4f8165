"""Who may change the server: the enrolment token is a real secret compared byte for byte,
the start-up line says whether enrolment is on, enrolment writes only into --index (never
into the run folder), and names are bounded and printable; the memory budget of the requests
in flight is enforced (503 with Retry-After) and the threads that decode and run the model are few."""
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import NEW_LANDMARK, PHOTO, TOKEN
from landmark.data import image_path

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo(l13) -> bytes:
    return image_path(l13, PHOTO, "test").read_bytes()


def _enrol(client, body: bytes, header, name: str | None = None, landmark: str = NEW_LANDMARK):
    return client.post(f"/v1/landmarks/{landmark}/images", files={"file": ("p.jpg", body, "image/jpeg")},
                       data={"name": name} if name is not None else None,
                       headers={"Authorization": header} if header is not None else {})


@pytest.mark.parametrize("token", ["", " ", "\u00a0", "\t", "two words", "caf\u00e9"])
def test_blank_or_unsendable_tokens_are_refused(rec, token):
    from landmark.serving import create_app
    from landmark.serving.settings import read_token, settings
    with pytest.raises(ValueError, match="token"):
        create_app(rec, token=token)
    with pytest.raises(ValueError, match="--token"):
        settings(token=token)
    with pytest.raises(ValueError, match="token"):
        read_token(token)


def test_token_is_compared_on_its_exact_bytes(rec, photo):
    from fastapi.testclient import TestClient

    from landmark.serving import create_app
    with TestClient(create_app(rec, token=TOKEN)) as c:
        for header in (f"Bearer {TOKEN}".encode() + b"\xa0", b"Bearer \xa0" + TOKEN.encode(),
                       f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", "Bearer "):
            res = _enrol(c, photo, header)
            assert res.status_code == 403 and res.json()["error"] == "wrong token", header
        assert _enrol(c, photo, f"Bearer {TOKEN}").status_code == 409   # the token passes; no --index here
        assert c.get("/health").json()["enrolment"] is False


def test_token_from_a_file(tmp_path):
    from landmark.serving.settings import read_token
    secret = tmp_path / "token"
    secret.write_text(f"{TOKEN}\n")
    assert read_token(token_file=secret) == TOKEN
    secret.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(token_file=secret)
    with pytest.raises(ValueError, match="once"):
        read_token(TOKEN, secret)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_startup_line_says_whether_enrolment_is_on(recognizer_run, recognizer_index, tmp_path):
    """`serve` in process (stopped as soon as it listens): the line names the enrolment state."""
    from landmark.serving import serve
    index = tmp_path / "idx"
    shutil.copytree(recognizer_index, index)
    for kwargs, expected in (({}, "enrolment off (no token)"),
                             ({"token": TOKEN}, "enrolment off (start with --index DIR to enrol)"),
                             ({"token": TOKEN, "index": index}, "enrolment on")):
        lines = []
        serve(recognizer_run, port=_free_port(), announce=lines.append,
              ready=lambda server: setattr(server, "should_exit", True), **kwargs)
        assert len(lines) == 1 and expected in lines[0], lines


def _run_with_index(recognizer_run, recognizer_index, tmp_path) -> Path:
    """A run folder as `landmark train` leaves it: checkpoints, run.json and its own RUN/index."""
    run = tmp_path / "run"
    shutil.copytree(recognizer_run, run)
    (run / "run.json").write_text(json.dumps({"classes": 13}))
    shutil.copytree(recognizer_index, run / "index")
    return run


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_enrolment_without_index_never_writes_the_run(recognizer_run, recognizer_index, tmp_path, photo):
    """`landmark serve RUN --token T` (a run with its own RUN/index) answers enrolment with 409."""
    import httpx
    run = _run_with_index(recognizer_run, recognizer_index, tmp_path)
    before = _snapshot(run)
    port = _free_port()
    env = {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "LANDMARK_TOKEN": TOKEN}
    server = subprocess.Popen([sys.executable, "-m", "landmark.cli", "serve", str(run), "--port", str(port),
                               "--threads", "1"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert server.poll() is None, server.stderr.read()
                time.sleep(0.2)
        res = httpx.post(f"{url}/v1/landmarks/{NEW_LANDMARK}/images", files={"file": ("p.jpg", photo, "image/jpeg")},
                         data={"name": "Versailles"}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert res.status_code == 409 and "--index DIR" in res.json()["error"], res.text
        assert httpx.get(f"{url}/health").json()["references"] == 24
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert _snapshot(run) == before   # nothing in the run folder changed
    from landmark import Recognizer
    from landmark.serving import create_app
    with pytest.raises(ValueError, match="belongs to a training run"):
        create_app(Recognizer.load(run), token=TOKEN, index_dir=run / "index")


@pytest.fixture()
def enrolling(recognizer_run, recognizer_index, tmp_path):
    from fastapi.testclient import TestClient

    from landmark import Recognizer
    from landmark.serving import create_app
    folder = tmp_path / "idx"
    shutil.copytree(recognizer_index, folder)
    with TestClient(create_app(Recognizer.load(recognizer_run, index=folder), token=TOKEN, index_dir=folder)) as c:
        yield c, folder


@pytest.mark.parametrize("name, reason", [("x" * 2**20, "at most 200"), ("Versailles\x1b[2J", "control character"),
                                          ("Versailles\r", None), ("Ver\rsailles", "control character"),
                                          ("evil\u202eelif", "control character"), ("   ", "empty")])
def test_enrolment_names_are_bounded_and_printable(enrolling, photo, name, reason):
    c, folder = enrolling
    meta = (folder / "meta.json").read_bytes()
    res = _enrol(c, photo, f"Bearer {TOKEN}", name=name)
    if reason is None:   # surrounding spaces and line ends are trimmed, not refused
        assert res.status_code == 200 and res.json()["name"] == "Versailles", res.text[:300]
        return
    assert res.status_code == 422 and reason in res.json()["error"], res.text[:300]
    assert (folder / "meta.json").read_bytes() == meta and not (folder / "enrolled").exists()
    assert len(c.get("/v1/landmarks").content) < 10_000


def test_names_already_stored_are_printed_safely(recognizer_run):
    from landmark import Recognizer
    rec = Recognizer.load(recognizer_run, names={"3": "Evil\x1b[2J\rname", "4": "y" * 5000}, threshold=0.0)
    assert rec.name("3") == "Evil\\x1b[2J\\rname"
    assert len(rec.name("4")) == 200 and rec.name("4").endswith("…")
    answer = rec.recognize(image_path(Path(__file__).resolve().parents[1].parent / "shared/data/landmarks13",
                                      PHOTO, "test"), top_k=13)[0]
    assert not any(c in answer.line() for c in "\x1b\r") and all(len(t.name) <= 200 for t in answer.top_k)


def test_memory_budget_refuses_with_503_and_retry_after(rec, photo):
    from fastapi.testclient import TestClient

    from landmark.serving import create_app
    app = create_app(rec, memory_budget_mb=4)
    with TestClient(app) as c:
        assert c.post("/v1/recognize", content=photo).status_code == 200
        other = app.state.budget.reservation()
        other.take(3 * 2**20, "another request")   # what requests in flight hold
        res = c.post("/v1/recognize", content=photo)
        assert res.status_code == 503 and res.headers["retry-after"] == "1" and "busy" in res.json()["error"]
        other.give_back(other.held)
        assert c.post("/v1/recognize", content=photo).status_code == 200
        health = c.get("/health").json()["memory_budget"]
        assert health["held_mb"] == 0 and health["refused"] == 1 and 0 < health["peak_mb"] <= 4
        # one image that could never fit (30000 x 30000 declared): 413, not 503 forever
        from test_serving import png_header
        huge = c.post("/v1/recognize", content=png_header(3000, 3000))
        assert huge.status_code == 413 and "budget" in huge.json()["error"]


def test_threads_are_bounded_under_concurrent_requests(rec, photo):
    import asyncio

    import httpx

    from landmark.serving import create_app
    app = create_app(rec, window=0.02, decoders=2)
    before = {t.ident for t in threading.enumerate()}

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*[c.post("/v1/recognize", content=photo) for _ in range(24)])

    assert all(r.status_code == 200 for r in asyncio.run(burst()))
    new = [t.name for t in threading.enumerate() if t.ident not in before]
    assert sum(n.startswith("landmark-decode") for n in new) <= 2
    assert sum(n.startswith("landmark-forward") for n in new) == 1
    assert len(new) <= 3, new


def test_an_empty_token_variable_is_refused_not_taken_for_unset(monkeypatch, tmp_path):
    """click treats LANDMARK_TOKEN="" as unset; an empty variable is a mistake (`$UNSET`), refused."""
    from landmark.serving.settings import TOKEN_ENV, read_token
    monkeypatch.setenv(TOKEN_ENV, "")
    with pytest.raises(ValueError, match="empty or blank"):
        read_token()
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert read_token() == TOKEN
    monkeypatch.delenv(TOKEN_ENV)
    assert read_token() is None
    from typer.testing import CliRunner

    from landmark.cli import app
    (tmp_path / "m.pt").write_bytes(b"not read: the settings are refused first")
    res = CliRunner().invoke(app, ["serve", str(tmp_path / "m.pt")], env={TOKEN_ENV: ""})
    assert res.exit_code == 2 and "empty or blank" in res.output, res.output
