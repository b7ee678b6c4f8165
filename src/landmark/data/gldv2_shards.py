"""Fetch the official GLDv2 TAR shards, verify their md5 and extract into the GLDv2 layout.

The GLDv2 authors publish (https://github.com/cvdfoundation/google-landmark, README and
``download-dataset.sh``):

* shards ``{base}/{split}/images_{NNN}.tar`` -- ``train`` 000-499, ``index`` 000-099,
  ``test`` 000-019 -- whose members are ``a/b/c/<id>.jpg``;
* md5 files ``{base}/md5sum/{split}/md5.images_{NNN}.txt`` in ``md5sum`` output format
  (``<32 hex digits>  images_NNN.tar``); the official script compares the first
  whitespace-separated field, and so does :func:`parse_md5`.

with ``base = https://s3.amazonaws.com/google-landmark``.  A shard is streamed to
``OUT/.partial/``, its md5 computed on the fly and compared, then each ``.jpg`` member is
decoded, shrunk to ``max_width`` and stored atomically at ``OUT/<split>/a/b/c/<id>.jpg``
(:func:`landmark.data.download.store_image`).  A finished shard leaves
``OUT/.shards/<split>_<NNN>.done`` so that a rerun skips it; the TAR is deleted unless
``keep_tars``.  Failed shards and undecodable members go to ``OUT/download_failures.csv``
(``id,url,reason``; for a shard the id is ``images_NNN.tar``).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from .download import (FAILURE_COLUMNS, FAILURES_FILE, ID_PATTERN, DownloadOptions, FetchError, HostRateLimiter,
                       clear_partial, image_reason, new_session, prepare_partial, store_image)
from .download import fetch as fetch_url
from .gldv2 import image_path
from .images import ImageError

SHARD_COUNTS = {"train": 500, "index": 100, "test": 20}
MD5_PATTERN = re.compile(r"^\s*([0-9a-fA-F]{32})\b")


def parse_shards(spec: str, split: str = "train") -> list[int]:
    """``"0-9"``, ``"3"``, ``"0,5,10-12"`` or ``"all"`` -> sorted shard numbers.

    Raises:
        ValueError: bad syntax, or a number outside the split's range.
    """
    limit = SHARD_COUNTS.get(split, 1000)
    if spec.strip() == "all":
        return list(range(limit))
    shards: set[int] = set()
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"bad shard list {spec!r}: use e.g. 0-9 or 0,3,5-7 or all")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) else lo
        if hi < lo or hi >= limit:
            raise ValueError(f"shards {part.strip()!r} outside 0-{limit - 1} for split {split!r}")
        shards.update(range(lo, hi + 1))
    return sorted(shards)


def shard_urls(base_url: str, split: str, shard: int) -> tuple[str, str]:
    """(TAR url, md5 url) of one shard, following the GLDv2 naming."""
    base = base_url.rstrip("/")
    name = f"images_{shard:03d}"
    return f"{base}/{split}/{name}.tar", f"{base}/md5sum/{split}/md5.{name}.txt"


def parse_md5(text: str) -> str:
    """The md5 hex digest at the start of an md5sum line (lower case).

    Raises:
        ValueError: no 32-hex-digit digest at the start.
    """
    match = MD5_PATTERN.match(text)
    if not match:
        raise ValueError(f"not an md5sum line: {text[:80]!r}")
    return match.group(1).lower()


def file_md5(path: Path) -> str:
    """md5 hex digest of a file, read in 4 MiB blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ShardReport:
    """Counts of one run over shards."""

    shards_done: int = 0
    shards_skipped: int = 0
    shards_failed: int = 0
    images: int = 0
    failures: int = 0
    failures_file: Path | None = None
    details: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The counts and per-shard details as printed by ``landmark download --gldv2`` (JSON-ready)."""
        return {"shards_done": self.shards_done, "shards_skipped": self.shards_skipped,
                "shards_failed": self.shards_failed, "images": self.images, "failures": self.failures,
                "failures_file": str(self.failures_file), "shards": self.details}


def extract_shard(tar_path: Path, out: Path, split: str, max_width: int, workers: int,
                  partial: Path, jpeg_quality: int = 90) -> tuple[int, list[tuple[str, str]]]:
    """Decode, shrink and store every ``.jpg`` member of a GLDv2 shard.

    Members are read in order (streaming); the file name's stem is the image id and its
    place is :func:`image_path` (never the member path, so ``../`` names cannot escape).

    Returns:
        (images stored, [(member name, reason)] for members that were not stored).
    """
    stored, failed, jobs = 0, [], []
    with tarfile.open(tar_path, "r|*") as tar, ThreadPoolExecutor(workers) as pool:
        for member in tar:
            if not member.isfile():
                continue
            image_id, problem = _member_id(member.name)
            source = None if problem else tar.extractfile(member)
            if problem or source is None:
                failed.append((member.name, problem or "unreadable member"))
                continue
            raw = partial / f"{image_id}.member"
            with open(raw, "wb") as fh:
                shutil.copyfileobj(source, fh)
            jobs.append((member.name, pool.submit(_store_member, raw, image_path(out, image_id, split), max_width,
                                                  jpeg_quality)))
            if len(jobs) >= 8 * workers:
                stored += _drain(jobs, failed)
        stored += _drain(jobs, failed)
    return stored, failed


def _member_id(name: str) -> tuple[str, str]:
    """(image id, "") of a TAR member ``.../<id>.jpg``, or ("", why it is not an image of the layout)."""
    name = Path(name).name
    if not name.lower().endswith(".jpg"):
        return "", "not a .jpg member"
    image_id = Path(name).stem
    return (image_id, "") if ID_PATTERN.match(image_id) else ("", "bad id")


def _store_member(raw: Path, dest: Path, max_width: int, jpeg_quality: int) -> str:
    """Store one extracted member (:func:`store_image`); returns "" or the failure reason."""
    try:
        store_image(raw, dest, max_width, jpeg_quality)
        return ""
    except ImageError as err:
        return image_reason(err)
    except OSError as err:
        return f"write error ({err})"
    finally:
        raw.unlink(missing_ok=True)


def _drain(jobs: list, failed: list) -> int:
    stored = 0
    for name, future in jobs:
        reason = future.result()
        if reason:
            failed.append((name, reason))
        else:
            stored += 1
    jobs.clear()
    return stored


def download_shards(split: str, shards: list[int], out: str | Path, opts: DownloadOptions | None = None, *,
                    keep_tars: bool = False, progress: bool = True) -> ShardReport:
    """Download, md5-check and extract GLDv2 shards into ``out`` (see module docstring).

    Args:
        split: ``train``, ``index`` or ``test``.
        shards: shard numbers (see :func:`parse_shards`).
        out: output folder; created if absent; finished shards of an earlier run are skipped.
        opts: ``base_url`` (where ``{split}/images_NNN.tar`` and ``md5sum/...`` live),
            timeouts, retries, ``max_width`` (0 keeps originals), ``workers`` (threads
            decoding and resizing members); ``max_bytes`` is ignored for shards (~1 GB).
        keep_tars: keep verified TARs in ``out/tars/``.

    Returns:
        :class:`ShardReport`.  A shard whose md5 does not match after the retries is
        not extracted and is listed in the failures file with reason ``md5 mismatch``.
    """
    opts = opts or DownloadOptions()
    out = Path(out)
    partial, marks = prepare_partial(out), out / ".shards"
    marks.mkdir(exist_ok=True)
    fetcher = _ShardFetcher(opts)
    report = ShardReport(failures_file=out / FAILURES_FILE)
    failed_shards: list[list[str]] = []
    for shard in tqdm(shards, desc=f"{split} shards", unit="shard", disable=not progress):
        mark = marks / f"{split}_{shard:03d}.done"
        if mark.is_file():
            report.shards_skipped += 1
            continue
        try:
            detail = _download_shard(fetcher, split, shard, out, partial=partial, mark=mark, keep_tars=keep_tars)
        except _ShardFailed as err:
            failed_shards.append(err.row)
            report.shards_failed += 1
            report.details.append({"shard": shard, "status": "failed", "reason": err.row[2]})
            continue
        report.images += detail["images"]
        report.shards_done += 1
        report.details.append(detail)
    report.failures = _write_failures(report.failures_file, partial, failed_shards + _done_failures(marks, split))
    clear_partial(partial)
    return report


class _ShardFailed(Exception):
    """A shard that could not be fetched, verified or read; ``row`` is its failures line."""

    def __init__(self, row: list[str]):
        super().__init__(row[2])
        self.row = row


class _ShardFetcher:
    """Fetches shard files with one session, rate limiter and retries; no size limit."""

    def __init__(self, opts: DownloadOptions):
        self.opts = replace(opts, max_bytes=1 << 40)
        self.limiter = HostRateLimiter(opts.rate_per_host)
        self.session = new_session(opts)

    def __call__(self, url: str, dest: Path) -> None:
        fetch_url(self.session, url, dest, self.opts, limiter=self.limiter)

    def verified_tar(self, split: str, shard: int, partial: Path) -> tuple[Path, str]:
        """Fetch a shard's md5 file, then its TAR until the md5 matches (at most ``retries + 1``
        times: a corrupted transfer is fetched again); returns (TAR path, md5).

        Raises:
            FetchError: a fetch failed, or the md5 never matched.
            ValueError: the md5 file holds no md5.
        """
        tar_url, md5_url = shard_urls(self.opts.base_url, split, shard)
        tar_path, md5_path = partial / f"images_{shard:03d}.tar", partial / f"md5.images_{shard:03d}.txt"
        self(md5_url, md5_path)
        expected = parse_md5(md5_path.read_text(encoding="utf-8", errors="replace"))
        got = ""
        for _ in range(self.opts.retries + 1):
            self(tar_url, tar_path)
            got = file_md5(tar_path)
            if got == expected:
                return tar_path, expected
        raise FetchError(f"md5 mismatch (got {got}, expected {expected})", False)


def _download_shard(fetcher: _ShardFetcher, split: str, shard: int, out: Path, partial: Path, mark: Path,
                    keep_tars: bool) -> dict:
    """Fetch, verify and extract one shard, then write its ``.done`` mark (and the failures
    of its members beside it); returns its report detail.

    Raises:
        _ShardFailed: fetching, verifying or reading the TAR failed (nothing is marked).
    """
    opts = fetcher.opts
    tar_url = shard_urls(opts.base_url, split, shard)[0]
    tar_path = partial / f"images_{shard:03d}.tar"
    try:
        tar_path, expected = fetcher.verified_tar(split, shard, partial)
        stored, bad = extract_shard(tar_path, out, split, opts.max_width, workers=opts.workers, partial=partial,
                                    jpeg_quality=opts.jpeg_quality)
    except (FetchError, ValueError, tarfile.TarError) as err:
        tar_path.unlink(missing_ok=True)
        reason = err.reason if isinstance(err, FetchError) else f"bad shard ({err})"
        raise _ShardFailed([tar_path.name, tar_url, reason]) from None
    _write_csv(mark.with_suffix(".failures.csv"), [[Path(name).stem, f"{tar_url}#{name}", reason]
                                                   for name, reason in bad])
    if keep_tars:
        (out / "tars").mkdir(exist_ok=True)
        os.replace(tar_path, out / "tars" / tar_path.name)
    else:
        tar_path.unlink(missing_ok=True)
    mark.write_text(json.dumps({"md5": expected, "images": stored, "failed": len(bad),
                                "max_width": opts.max_width}) + "\n")
    return {"shard": shard, "status": "done", "images": stored, "failed": len(bad)}


def _done_failures(marks: Path, split: str) -> list[list[str]]:
    """The member failures of every finished shard of ``split`` (earlier runs included)."""
    rows: list[list[str]] = []
    for done in sorted(marks.glob(f"{split}_*.failures.csv")):
        with open(done, newline="", encoding="utf-8") as fh:
            rows.extend(list(csv.reader(fh))[1:])
    return rows


def _write_failures(path: Path, partial: Path, rows: list[list[str]]) -> int:
    """Write the failures file (via ``partial``, then renamed); returns its row count."""
    tmp = partial / (FAILURES_FILE + ".part")
    _write_csv(tmp, rows)
    os.replace(tmp, path)
    return len(rows)


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    """``id,url,reason`` rows to ``path``, atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(FAILURE_COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, path)
