"""landmark download --csv: every fault gives its outcome and reason; resume; kill and rerun."""
import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from _http_server import FaultyServer, png_header
from landmark.data import image_path, load_image
from landmark.data.download import DownloadOptions, HostRateLimiter, download_csv

FAST = dict(workers=4, timeout=0.5, connect_timeout=2.0, retries=1, backoff=0.01, rate_per_host=0,
            max_bytes=5 * 2**20)


def real_photos(l13: Path, n: int) -> list[bytes]:
    """The first ``n`` train photos of landmarks13 that are JPEGs wider than 256 px."""
    out = []
    with open(l13 / "train.csv") as fh:
        for row in csv.DictReader(fh):
            data = image_path(l13, row["id"]).read_bytes()
            with Image.open(io.BytesIO(data)) as img:
                if img.format == "JPEG" and img.width > 300:
                    out.append(data)
            if len(out) == n:
                return out
    raise AssertionError("not enough photos")


def small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (120, 80), (10, 200, 30)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("id,url,landmark_id\n" + "\n".join(lines) + "\n")
    return path


def read_failures(out: Path) -> dict[str, str]:
    with open(out / "download_failures.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {r["id"]: r["reason"] for r in rows}, rows


def test_every_fault_has_its_outcome(tmp_path, l13):
    photo = real_photos(l13, 1)[0]
    files = {"photo": photo, "a.jpg": photo, "small.jpg": small_jpeg(), "bomb.png": png_header(20_000, 20_000),
             "huge.jpg": b"\xff" * (6 * 2**20)}
    with FaultyServer(files, slow_s=1.5) as srv:
        rows = [
            f"ok001,{srv.url('/img/a.jpg')},1",
            f"small01,{srv.url('/img/small.jpg')},1",
            f"nf404,{srv.url('/status/404')},1",
            f"err500,{srv.url('/status/500')},1",
            f"flaky1,{srv.url('/flaky/k1')},2",
            f"slow1,{srv.url('/slow')},2",
            f"drip1,{srv.url('/drip')},2",
            f"reset1,{srv.url('/reset')},2",
            f"freset,{srv.url('/flaky-reset/k2')},2",
            f"trunc1,{srv.url('/truncated')},3",
            f"html01,{srv.url('/html')},3",
            f"bomb01,{srv.url('/img/bomb.png')},3",
            f"huge01,{srv.url('/img/huge.jpg')},3",
            f"redir1,{srv.url('/redirect/a.jpg')},4",
            f"loop01,{srv.url('/loop')},4",
            f"ok001,{srv.url('/img/small.jpg')},1",       # duplicate id
            "short1,http://127.0.0.1:9/x.jpg",           # malformed: 2 fields
            "emptyu,,5",                                 # empty url
            f"../evil,{srv.url('/img/a.jpg')},5",         # id that would escape the layout
            "ftp001,ftp://127.0.0.1/a.jpg,5",            # not http
        ]
        source = write_csv(tmp_path / "train.csv", rows)
        out = tmp_path / "out"
        report = download_csv(source, out, DownloadOptions(**FAST), progress=False)
        hits = dict(srv.hits)

    assert report.rows == 20
    assert report.on_disk + report.failures == 20
    saved = {"ok001", "small01", "flaky1", "freset", "redir1"}
    assert report.downloaded == len(saved) and report.already_present == 0
    reasons, failure_rows = read_failures(out)
    assert len(failure_rows) == 15 and set(reasons) | saved == {r.split(",")[0] for r in rows}
    expected = {"nf404": "http 404", "err500": "http 500", "slow1": "timeout", "drip1": "timeout (over",
                "reset1": "connection error", "trunc1": "truncated body",
                "html01": "not an image (unidentified format)",
                "bomb01": "too large: Image size (400000000 pixels)", "huge01": "too large: 6291456 bytes",
                "loop01": "too many redirects", "short1": "malformed row (line 18: 2 fields",
                "emptyu": "empty url", "../evil": "bad id", "ftp001": "bad url"}
    for image_id, prefix in expected.items():
        assert reasons[image_id].startswith(prefix), (image_id, reasons[image_id])
    dup = [r for r in failure_rows if r["id"] == "ok001"]
    assert len(dup) == 1 and dup[0]["reason"].startswith("duplicate id (line 17")
    # retries: a retryable error is tried retries+1 = 2 times, a final one (404) once
    assert hits["/status/500"] == 2 and hits["/status/404"] == 1 and hits["/flaky/k1"] == 2
    assert hits["/flaky-reset/k2"] == 2 and hits["/truncated"] == 2 and hits["/html"] == 1
    assert hits["/img/a.jpg"] == 2  # ok001 and the redirect target; the duplicate row is never fetched

    # saved files: resized to width 256 keeping aspect, or original bytes when narrower
    with Image.open(io.BytesIO(photo)) as img:
        width, height = img.size
    for image_id in ("ok001", "flaky1", "freset", "redir1"):
        img = load_image(image_path(out, image_id))
        assert img.size == (256, round(height * 256 / width))
    assert image_path(out, "small01").read_bytes() == files["small.jpg"]
    on_disk = sorted(p.stem for p in (out / "train").rglob("*") if p.is_file())
    assert on_disk == sorted(saved)
    assert not (out / ".partial").exists()


def test_resume_skips_valid_files_and_refetches_broken_ones(tmp_path, l13):
    photos = real_photos(l13, 3)
    files = {f"{i}.jpg": p for i, p in enumerate(photos)}
    with FaultyServer(files) as srv:
        source = write_csv(tmp_path / "train.csv", [f"img00{i},{srv.url(f'/img/{i}.jpg')},{i}" for i in range(3)]
                           + [f"gone01,{srv.url('/status/404')},9"])
        out = tmp_path / "out"
        first = download_csv(source, out, DownloadOptions(**FAST, max_width=0), progress=False)
        assert (first.downloaded, first.already_present, first.failures) == (3, 0, 1)
        assert image_path(out, "img001").read_bytes() == photos[1]        # max_width=0 keeps bytes
        image_path(out, "img002").write_bytes(photos[2][:500])             # now broken
        second = download_csv(source, out, DownloadOptions(**FAST, max_width=0), progress=False)
        hits = dict(srv.hits)
    assert (second.downloaded, second.already_present, second.failures) == (1, 2, 1)
    assert hits["/img/0.jpg"] == 1 and hits["/img/1.jpg"] == 1 and hits["/img/2.jpg"] == 2
    assert hits["/status/404"] == 2                                       # failures are retried on rerun
    assert image_path(out, "img002").read_bytes() == photos[2]
    assert read_failures(out)[0] == {"gone01": "http 404"}


def test_rate_limiter_spaces_requests_per_host():
    now = [100.0]
    slept: list[float] = []
    limiter = HostRateLimiter(4.0, clock=lambda: now[0], sleep=slept.append)
    for host in ("a", "a", "a", "b"):
        limiter.wait(host)
    assert slept == [0.25, 0.5]          # a: slots at +0, +0.25, +0.5; b: its own slot at +0
    now[0] = 101.0                       # later than every reserved slot: no wait
    limiter.wait("a")
    assert slept == [0.25, 0.5]
    HostRateLimiter(0, sleep=slept.append).wait("a")
    assert slept == [0.25, 0.5]


def test_header_without_url_is_refused(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,landmark_id\nabc,1\n")
    with pytest.raises(ValueError, match="lacks 'id' or 'url'"):
        download_csv(bad, tmp_path / "out", progress=False)


@pytest.mark.slow
def test_kill_mid_run_then_rerun_accounts_for_every_row(tmp_path, l13):
    photos = real_photos(l13, 4)
    files = {f"{i}.jpg": photos[i % 4] for i in range(40)}
    out = tmp_path / "out"
    with FaultyServer(files, latency_s=0.15) as srv:
        lines = [f"id{i:04d},{srv.url(f'/img/{i}.jpg')},{i % 5}" for i in range(40)]
        lines += [f"miss{i:02d},{srv.url(f'/status/404?{i}')},7" for i in range(3)]
        source = write_csv(tmp_path / "train.csv", lines)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        proc = subprocess.Popen([sys.executable, "-m", "landmark.cli", "download", "--csv", str(source),
                                 "--out", str(out), "--workers", "2", "--rate", "0", "--no-progress"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((out / "train").rglob("*.jpg"))) >= 8 if (out / "train").exists() else False:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the downloader finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        before = {p.stem for p in (out / "train").rglob("*.jpg")}
        hits_before = sum(srv.hits.values())
        assert 8 <= len(before) < 40 and not (out / "download_failures.csv").exists()

        # a generous timeout: on a loaded machine FAST's 0.5 s let a slow answer time out and be retried,
        # one more hit than the count below allows (seen once in 19 min of a suite at load 8 to 10)
        report = download_csv(source, out, DownloadOptions(**{**FAST, "workers": 2, "timeout": 10.0}), progress=False)
        hits = dict(srv.hits)

    assert report.rows == 43 and report.on_disk == 40 and report.failures == 3
    assert report.already_present == len(before) and report.downloaded == 40 - len(before)
    saved = [p for p in (out / "train").rglob("*") if p.is_file()]
    assert sorted(p.stem for p in saved) == [f"id{i:04d}" for i in range(40)]
    for p in saved:
        load_image(p)                                   # every file decodes: nothing partial
    assert not (out / ".partial").exists()
    for image_id in before:                             # finished rows are never fetched again
        assert hits[f"/img/{int(image_id[2:])}.jpg"] == 1
    # at most the 2 requests in flight at the kill were repeated
    assert sum(v for k, v in hits.items() if k.startswith("/img/")) <= 40 + 2
    assert hits_before <= 43
    assert set(read_failures(out)[0]) == {"miss00", "miss01", "miss02"}
