"""Download a GLDv2-style URL list into the GLDv2 layout: concurrent, polite, resumable.

Input: a CSV with at least ``id`` and ``url`` columns, as GLDv2's ``train.csv``
(``id,url,landmark_id``; Weyand et al., CVPR 2020,
https://github.com/cvdfoundation/google-landmark) and GLDv1 (Kaggle 2018) publish.
Output: ``OUT/<split>/a/b/c/<id>.jpg`` (:func:`landmark.data.image_path`), each image
shrunk so its width is at most ``max_width`` pixels (aspect kept), plus
``OUT/download_failures.csv`` (``id,url,reason``) listing every row that did not end
as an image on disk.  So every data row of the CSV is accounted for: it is either a
valid image file or one failures line.

Guarantees:

* atomic files: bytes are streamed into ``OUT/.partial/`` and moved into place with
  :func:`os.replace` only after :func:`landmark.data.load_image` decoded them, so a
  kill at any moment leaves no half-written image in the layout;
* resume: a rerun skips ids whose file is present and decodes (it re-fetches those
  that do not) and retries the rows that failed last time;
* bounded memory: the CSV is streamed and at most ``4 * workers`` rows are in flight;
  only the set of ids seen so far grows (about 100 bytes per row, ~0.4 GB for
  GLDv2's 4.1M rows), to detect duplicate ids.
"""
from __future__ import annotations

import csv
import os
import random
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import requests
import urllib3
from tqdm import tqdm

from .download_options import DownloadOptions
from .gldv2 import BAD_ID, GLDV2_ID, image_path
from .images import LIMIT_PREFIXES, ImageError, load_image, resize_to_width

# Ids become file names: letters, digits, '_' and '-' only (no path tricks), at least 3
# characters for the a/b/c folders and at most 128 (file names have a length limit).
# The same rule as every reader of GLDv2 CSVs (landmark.data.gldv2.GLDV2_ID).
ID_PATTERN = GLDV2_ID
FAILURE_COLUMNS = ["id", "url", "reason"]
FAILURES_FILE = "download_failures.csv"
PARTIAL_DIR = ".partial"
PART_SUFFIX = ".part"
# Names of the files the downloaders put into PARTIAL_DIR (csv rows; GLDv2 shards and their
# members); only these are ever deleted there.
OWN_PARTIAL_FILES = ("*.part", "*.part.jpg", "*.member", "*.member.jpg", "images_*.tar", "md5.images_*.txt")
USER_AGENT = "landmark-downloader/0.1 (research; polite, rate-limited)"


@dataclass
class DownloadReport:
    """Counts of one run; ``on_disk + failures == rows`` always holds."""

    rows: int = 0
    downloaded: int = 0
    already_present: int = 0
    failures: int = 0
    failures_file: Path | None = None
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def on_disk(self) -> int:
        """Rows whose image is on disk now (downloaded or already present)."""
        return self.downloaded + self.already_present

    def as_dict(self) -> dict:
        """The counts as printed by ``landmark download`` (JSON-ready)."""
        return {"rows": self.rows, "images_on_disk": self.on_disk, "failures": self.failures,
                "downloaded": self.downloaded, "already_present": self.already_present,
                "failures_file": str(self.failures_file), "reasons": dict(sorted(self.reasons.items()))}


class FetchError(Exception):
    """One URL could not be fetched; ``reason`` is the failures-file text."""

    def __init__(self, reason: str, retryable: bool, retry_after: float = 0.0):
        super().__init__(reason)
        self.reason, self.retryable, self.retry_after = reason, retryable, retry_after


class HostRateLimiter:
    """At most ``rate`` request starts per second per host (evenly spaced slots).

    Thread-safe; a caller reserves the next free slot of its host under a lock and
    sleeps outside it.  ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate, self._clock, self._sleep = rate, clock, sleep
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        """Block until ``host`` may be contacted again."""
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + 1.0 / self.rate
        if slot > now:
            self._sleep(slot - now)


def _short(err: BaseException, limit: int = 160) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _retry_after(resp: requests.Response) -> float:
    value = resp.headers.get("Retry-After", "")
    return min(float(value), 60.0) if value.strip().isdigit() else 0.0


def fetch_once(session: requests.Session, url: str, dest: Path, opts: DownloadOptions) -> int:
    """One GET of ``url`` streamed into ``dest``; returns the number of bytes written.

    Raises:
        FetchError: with reasons ``http <status>``, ``timeout``, ``truncated body``,
            ``connection error (...)``, ``too many redirects``, ``too large: ...``,
            ``empty body``, ``bad url (...)`` or ``request error (...)``.
    """
    deadline = time.monotonic() + opts.timeout
    try:
        with session.get(url, stream=True, timeout=(opts.connect_timeout, opts.timeout)) as resp:
            if resp.status_code != 200:
                code = resp.status_code
                retry = code in (408, 425, 429) or code >= 500
                raise FetchError(f"http {code}", retry, _retry_after(resp))
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > opts.max_bytes:
                raise FetchError(f"too large: {int(length)} bytes (limit {opts.max_bytes})", False)
            size = 0
            with open(dest, "wb") as fh:
                # read1 returns after one socket read, so a slow drip meets the deadline
                while chunk := resp.raw.read1(1 << 16, decode_content=True):
                    size += len(chunk)
                    if size > opts.max_bytes:
                        raise FetchError(f"too large: over {opts.max_bytes} bytes", False)
                    if time.monotonic() > deadline:
                        raise FetchError(f"timeout (over {opts.timeout:g} s)", True)
                    fh.write(chunk)
    except FetchError:
        raise
    except urllib3.exceptions.ReadTimeoutError:
        raise FetchError("timeout", True) from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError) as err:
        raise FetchError(f"truncated body ({_short(err, 80)})", True) from None
    except requests.exceptions.TooManyRedirects:
        raise FetchError("too many redirects", False) from None
    except requests.exceptions.Timeout:
        raise FetchError("timeout", True) from None
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as err:
        raise FetchError(f"truncated body ({_short(err, 80)})", True) from None
    except requests.exceptions.ConnectionError as err:
        # requests wraps a read timeout during streaming as ConnectionError
        if err.args and isinstance(err.args[0], urllib3.exceptions.ReadTimeoutError):
            raise FetchError("timeout", True) from None
        raise FetchError(f"connection error ({_short(err, 120)})", True) from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema, requests.exceptions.URLRequired) as err:
        raise FetchError(f"bad url ({_short(err, 80)})", False) from None
    except requests.exceptions.RequestException as err:
        raise FetchError(f"request error ({_short(err)})", True) from None
    if size == 0:
        raise FetchError("empty body", False)
    return size


def fetch(session: requests.Session, url: str, dest: Path, opts: DownloadOptions,
          limiter: HostRateLimiter) -> int:
    """:func:`fetch_once` with rate limiting and up to ``opts.retries`` retries.

    Raises:
        FetchError: the last attempt's error, or the first non-retryable one.
    """
    host = urlsplit(url).hostname or ""
    last: FetchError | None = None
    for attempt in range(opts.retries + 1):
        if attempt:
            pause = opts.backoff * 2 ** (attempt - 1) * (1 + 0.25 * random.random())
            time.sleep(max(pause, last.retry_after if last else 0.0))
        limiter.wait(host)
        try:
            return fetch_once(session, url, dest, opts)
        except FetchError as err:
            last = err
            if not err.retryable:
                raise
    assert last is not None
    raise last


def new_session(opts: DownloadOptions) -> requests.Session:
    """An HTTP session with ``opts.max_redirects`` and this downloader's User-Agent."""
    session = requests.Session()
    session.max_redirects = opts.max_redirects
    session.headers["User-Agent"] = USER_AGENT
    return session


def store_image(raw: Path, dest: Path, max_width: int, jpeg_quality: int = 90) -> None:
    """Check that ``raw`` decodes, shrink it to ``max_width`` and move it to ``dest`` atomically.

    Images no wider than ``max_width`` (or any image when ``max_width == 0``) keep their
    original bytes; wider ones are re-encoded as JPEG and decoded once more before the
    move.  ``raw`` is consumed (moved or left for the caller to delete).

    Raises:
        ImageError: ``raw`` (or its resized copy) does not decode, or is larger than
            :data:`landmark.data.images.MAX_PIXELS`.
    """
    img = load_image(raw)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if max_width and img.width > max_width:
        tmp = raw.with_name(raw.name + ".jpg")
        try:
            resize_to_width(img, max_width).save(tmp, "JPEG", quality=jpeg_quality)
            load_image(tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        os.replace(raw, dest)


def image_reason(err: ImageError) -> str:
    """Failures-file reason for an image that did not decode."""
    text = str(err)
    return text if text.startswith((*LIMIT_PREFIXES, "not an image")) else f"not an image ({text})"


def is_valid_image(path: Path) -> bool:
    """True when ``path`` exists and decodes with :func:`load_image`."""
    if not path.is_file():
        return False
    try:
        load_image(path, draft=64)
        return True
    except ImageError:
        return False


@dataclass
class _Row:
    line: int
    id: str
    url: str
    error: str = ""


def iter_rows(fh) -> Iterator[_Row]:
    """Stream the data rows of an ``id,url[,...]`` CSV; bad rows come with ``error`` set.

    Raises:
        ValueError: the header lacks ``id`` or ``url``.
    """
    reader = csv.reader(fh)
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip().lstrip("\ufeff") for h in header]
    if "id" not in header or "url" not in header:
        raise ValueError(f"CSV header {header} lacks 'id' or 'url'; expected id,url,landmark_id")
    i_id, i_url, width = header.index("id"), header.index("url"), len(header)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield _Row(reader.line_num, "", "", f"malformed row (line {reader.line_num}: {_short(err, 80)})")
            continue
        if not fields:
            continue  # blank line: not a row
        if len(fields) != width:
            first = fields[0] if fields else ""
            yield _Row(reader.line_num, first, "",
                       f"malformed row (line {reader.line_num}: {len(fields)} fields, header has {width})")
            continue
        row = _Row(reader.line_num, fields[i_id].strip(), fields[i_url].strip())
        row.error = _row_error(row)
        yield row


def _row_error(row: _Row) -> str:
    """Why a row cannot be downloaded ("" when it can): a bad id, an empty or malformed url."""
    if not ID_PATTERN.match(row.id):
        return BAD_ID
    if not row.url:
        return "empty url"
    try:
        parts = urlsplit(row.url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError as err:
        return f"bad url ({_short(err, 80)})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "bad url (not http or https)" if parts.scheme not in ("http", "https") else "bad url (no host)"
    return ""


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 22), b""))


class _Worker:
    """Per-row job run in the thread pool; one requests.Session per thread."""

    def __init__(self, out: Path, partial: Path, opts: DownloadOptions):
        self.out, self.partial, self.opts = out, partial, opts
        self.limiter = HostRateLimiter(opts.rate_per_host)
        self.local = threading.local()

    def session(self) -> requests.Session:
        """This thread's session (made on first use)."""
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = new_session(self.opts)
        return session

    def __call__(self, image_id: str, url: str) -> tuple[str, str]:
        """Returns ``("present" | "saved" | "failed", reason)``; never raises for one bad row
        (an unexpected error is that row's failure, with the error as its reason)."""
        raw = self.partial / f"{image_id}.{threading.get_ident()}{PART_SUFFIX}"
        try:
            dest = image_path(self.out, image_id, self.opts.split)
            if is_valid_image(dest):
                return "present", ""
            fetch(self.session(), url, raw, self.opts, limiter=self.limiter)
            store_image(raw, dest, self.opts.max_width, self.opts.jpeg_quality)
            return "saved", ""
        except FetchError as err:
            return "failed", err.reason
        except ImageError as err:
            return "failed", image_reason(err)
        except OSError as err:
            return "failed", f"write error ({_short(err, 80)})"
        except Exception as err:  # noqa: BLE001  a bad row is a failure of that row, never of the run
            return "failed", f"error ({type(err).__name__}: {_short(err, 80)})"
        finally:
            raw.unlink(missing_ok=True)


def download_csv(csv_path: str | Path, out: str | Path, opts: DownloadOptions | None = None, *,
                 progress: bool = True) -> DownloadReport:
    """Download every row of ``csv_path`` into ``out`` (see the module docstring).

    Args:
        csv_path: ``id,url[,landmark_id]`` CSV (extra columns ignored).
        out: output folder; created if absent; an existing one is resumed.
        opts: :class:`DownloadOptions` (defaults when ``None``).
        progress: show a tqdm bar (rows/s and ETA).

    Returns:
        :class:`DownloadReport`; ``out/download_failures.csv`` holds one line per failed
        row (malformed rows, bad or empty ids/urls, duplicate ids, fetch and decode errors).

    Raises:
        FileNotFoundError: ``csv_path`` is missing.
        ValueError: its header lacks ``id`` or ``url``; ``workers`` < 1.
    """
    opts = opts or DownloadOptions()
    csv_path, out = Path(csv_path), Path(out)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} does not exist")
    if opts.workers < 1:
        raise ValueError(f"workers={opts.workers}: need at least 1")
    partial = prepare_partial(out)
    report = DownloadReport(failures_file=out / FAILURES_FILE)
    failures_tmp = partial / (FAILURES_FILE + ".part")
    with open(csv_path, newline="", encoding="utf-8", errors="replace") as fh, \
            open(failures_tmp, "w", newline="", encoding="utf-8") as ff, \
            tqdm(total=max(_count_lines(csv_path) - 1, 0), unit="img", disable=not progress,
                 desc="download", smoothing=0.05) as bar:
        _CsvRun(report, csv.writer(ff), bar).download(iter_rows(fh), _Worker(out, partial, opts), opts.workers)
    os.replace(failures_tmp, report.failures_file)
    clear_partial(partial)
    return report


class _CsvRun:
    """One pass over the rows of a CSV: fetches submitted to a thread pool (at most
    ``4 * workers`` in flight), every outcome counted in ``report``, every failure written
    to ``failures`` (a csv writer) and shown on ``bar``."""

    def __init__(self, report: DownloadReport, failures, bar: tqdm):
        self.report, self.failures, self.bar = report, failures, bar
        self.failures.writerow(FAILURE_COLUMNS)
        self.seen: set[str] = set()
        self.pending: dict[Future, _Row] = {}

    def download(self, rows: Iterator[_Row], worker: _Worker, workers: int) -> None:
        """Fetch every good row with ``worker``; fail bad and duplicate rows at once."""
        with ThreadPoolExecutor(workers, thread_name_prefix="download") as pool:
            try:
                for row in rows:
                    self.report.rows += 1
                    reason = row.error or self._duplicate(row)
                    if reason:
                        self.fail(row, reason)
                        self.bar.update(1)
                        continue
                    self.pending[pool.submit(worker, row.id, row.url)] = row
                    if len(self.pending) >= 4 * workers:
                        self._collect(wait(self.pending, return_when=FIRST_COMPLETED).done)
                while self.pending:
                    self._collect(wait(self.pending, return_when=FIRST_COMPLETED).done)
            except BaseException:  # Ctrl-C: drop queued rows at once; a rerun resumes
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    def _duplicate(self, row: _Row) -> str:
        """The failure reason of a row whose id an earlier row had ("" for a new id)."""
        if row.id in self.seen:
            return f"duplicate id (line {row.line}; an earlier row has it)"
        self.seen.add(row.id)
        return ""

    def fail(self, row: _Row, reason: str) -> None:
        """One failures line; the reason's kind (text before `` (`` or ``:``) is counted."""
        self.failures.writerow([row.id, row.url, reason])
        self.report.failures += 1
        key = reason.split(" (")[0].split(":")[0]
        self.report.reasons[key] = self.report.reasons.get(key, 0) + 1

    def _collect(self, done: set[Future]) -> None:
        for future in done:
            row = self.pending.pop(future)
            status, reason = future.result()
            if status == "saved":
                self.report.downloaded += 1
            elif status == "present":
                self.report.already_present += 1
            else:
                self.fail(row, reason)
        self.bar.update(len(done))
        self.bar.set_postfix(saved=self.report.downloaded, present=self.report.already_present,
                             failed=self.report.failures, refresh=False)


def prepare_partial(out: Path) -> Path:
    """Create ``out`` and an empty ``out/.partial`` (the downloaders' leftovers of a killed
    run removed: ours, never valid; files a user put there are kept); returns the latter."""
    out.mkdir(parents=True, exist_ok=True)
    partial = out / PARTIAL_DIR
    clear_partial(partial)
    partial.mkdir(exist_ok=True)
    return partial


def clear_partial(partial: Path) -> None:
    """Delete the downloaders' own files in ``partial`` (:data:`OWN_PARTIAL_FILES`), then the
    folder if that left it empty; anything else a user put there is kept."""
    if not partial.is_dir():
        return
    for f in partial.iterdir():
        if f.is_file() and any(f.match(pattern) for pattern in OWN_PARTIAL_FILES):
            f.unlink(missing_ok=True)
    try:
        partial.rmdir()
    except OSError:
        pass  # not empty: user files stay
