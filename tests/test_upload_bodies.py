"""A body that arrives slowly or never: the memory budget holds what arrived, not what the
client declared, and the body has ``Limits.body_seconds`` to arrive (408 after).  Before,
12 clients that declared 20 MB and sent 10 bytes held 480 MB of the 512 MB budget for as
long as they kept their connections open, and every 12-Mpixel photo got 503."""
import asyncio

import pytest

from _helpers import tiny_recognizer




@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return tiny_recognizer(tmp_path_factory.mktemp("model"))


async def stalled_upload(app, declared: int, sent: bytes, watch: float, deadline: float = 10.0):
    """POST /v1/recognize declaring ``declared`` bytes, sending ``sent`` and then nothing.

    Returns (budget held after ``watch`` s, response status, budget held after the response)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/recognize", "raw_path": b"/v1/recognize", "query_string": b"",
             "root_path": "", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
             "headers": [(b"content-type", b"image/jpeg"), (b"content-length", str(declared).encode())]}
    calls, sent_messages = 0, []

    async def receive():
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": sent, "more_body": True}
        await asyncio.sleep(3600)   # the client never sends the rest (nor disconnects)

    async def send(message):
        sent_messages.append(message)

    task = asyncio.ensure_future(app(scope, receive, send))
    await asyncio.sleep(watch)
    held_while_waiting = app.state.budget.held
    try:
        await asyncio.wait_for(task, deadline)
    except asyncio.TimeoutError:
        return held_while_waiting, None, None   # still waiting for the body (wait_for cancelled it)
    status = next(m["status"] for m in sent_messages if m["type"] == "http.response.start")
    return held_while_waiting, status, app.state.budget.held


def test_a_stalled_body_holds_only_the_memory_of_what_arrived(rec):
    from landmark.serving import create_app
    app = create_app(rec)
    held, _, _ = asyncio.run(stalled_upload(app, 20 * 2**20, b"\xff" * 1000, watch=0.3, deadline=0.5))
    assert held <= 2 * 1000          # was 2 x 20 MB, reserved from the declared length


def test_a_body_that_does_not_arrive_in_time_is_cut_off_and_gives_its_memory_back(rec):
    from landmark.serving import create_app
    from landmark.serving.uploads import Limits
    limits = Limits()
    limits.body_seconds = 1.0     # set after construction: the field did not exist before
    app = create_app(rec, limits=limits)
    _, status, after = asyncio.run(stalled_upload(app, 20 * 2**20, b"\xff" * 1000, watch=0.1, deadline=5.0))
    assert status == 408           # was: still waiting after 5 s, for ever
    assert after == 0


def test_the_body_deadline_is_a_limit_with_a_default():
    from landmark.serving.uploads import Limits
    assert Limits().body_seconds == 60.0
