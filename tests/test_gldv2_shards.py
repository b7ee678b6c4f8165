"""landmark download --gldv2: shards and md5 files served from 127.0.0.1, built here."""
import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from _http_server import HTML, FaultyServer
from landmark.cli import app
from landmark.data import image_path, load_image
from landmark.data.download import DownloadOptions
from landmark.data.gldv2_shards import download_shards, parse_md5, parse_shards, shard_urls


def test_parse_shards_and_urls():
    assert parse_shards("0-3") == [0, 1, 2, 3]
    assert parse_shards("7, 0,2-3,3") == [0, 2, 3, 7]
    assert parse_shards("all", "test") == list(range(20))
    for bad in ("3-1", "500", "a", "0-500"):
        with pytest.raises(ValueError):
            parse_shards(bad)
    assert shard_urls("https://s3.amazonaws.com/google-landmark/", "train", 7) == (
        "https://s3.amazonaws.com/google-landmark/train/images_007.tar",
        "https://s3.amazonaws.com/google-landmark/md5sum/train/md5.images_007.txt")
    assert parse_md5("D41D8CD98F00B204E9800998ECF8427E  images_000.tar\n") == "d41d8cd98f00b204e9800998ecf8427e"
    with pytest.raises(ValueError):
        parse_md5("<html>NoSuchKey</html>")


def photo(seed: int, size=(640, 480)) -> bytes:
    img = Image.effect_mandelbrot(size, (-2 + seed * 0.1, -1.5, 1, 1.5), 60).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def build_shard(site: Path, shard: int, members: dict[str, bytes], md5: str | None = None) -> None:
    """``site/train/images_NNN.tar`` with ``a/b/c/<id>.jpg`` members and its md5sum file."""
    tar_path = site / "train" / f"images_{shard:03d}.tar"
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w") as tar:
        for image_id, data in members.items():
            info = tarfile.TarInfo(f"{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    digest = md5 or hashlib.md5(tar_path.read_bytes()).hexdigest()
    md5_file = site / "md5sum" / "train" / f"md5.images_{shard:03d}.txt"
    md5_file.parent.mkdir(parents=True, exist_ok=True)
    md5_file.write_text(f"{digest}  images_{shard:03d}.tar\n")


def test_shards_verify_extract_resize_and_resume(tmp_path):
    site = tmp_path / "site"
    build_shard(site, 0, {"0a1b2c3d4e5f6789": photo(0), "0a1b000000000001": photo(1, (200, 150))})
    build_shard(site, 1, {"1f00000000000002": photo(2), "1f00000000000bad": HTML})
    build_shard(site, 2, {"2e00000000000003": photo(3)}, md5="0" * 32)      # corrupted in transit
    # shard 3 does not exist on the server: its md5 file is a 404
    out = tmp_path / "out"
    with FaultyServer({}, static_root=site) as srv:
        base = srv.url("/static")
        opts = DownloadOptions(max_width=256, workers=2, timeout=5, retries=1, backoff=0.01, rate_per_host=0,
                               base_url=base)
        report = download_shards("train", [0, 1, 2, 3], out, opts, progress=False)
        assert (report.shards_done, report.shards_failed, report.images) == (2, 2, 3)
        again = download_shards("train", [0, 1, 2, 3], out, opts, progress=False)
        hits = dict(srv.hits)
        cli = CliRunner().invoke(app, ["download", "--gldv2", "train", "--shards", "0-1", "--base-url", base,
                                       "--out", str(tmp_path / "cli"), "--max-width", "0", "--no-progress"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["images"] == 3 and json.loads(cli.output)["failures"] == 1
    assert (image_path(tmp_path / "cli", "0a1b2c3d4e5f6789").read_bytes() == photo(0))  # --max-width 0: original

    wide = load_image(image_path(out, "0a1b2c3d4e5f6789"))
    assert wide.size == (256, 192)                                            # 640x480 -> 256 wide
    assert image_path(out, "0a1b000000000001").read_bytes() == photo(1, (200, 150))  # narrow: kept
    assert load_image(image_path(out, "1f00000000000002")).size == (256, 192)
    assert not image_path(out, "2e00000000000003").exists()                   # md5 mismatch: not extracted
    with open(out / "download_failures.csv", newline="") as fh:
        failures = {r["id"]: r["reason"] for r in csv.DictReader(fh)}
    assert failures["images_002.tar"].startswith("md5 mismatch")
    assert failures["images_003.tar"] == "http 404"
    assert failures["1f00000000000bad"].startswith("not an image")
    assert len(failures) == 3
    # md5 mismatch: fetched retries+1 = 2 times per run; finished shards are not fetched again
    assert hits["/static/train/images_000.tar"] == 1 and hits["/static/train/images_001.tar"] == 1
    assert hits["/static/train/images_002.tar"] == 4
    assert (again.shards_skipped, again.shards_done, again.shards_failed) == (2, 0, 2)
    assert again.failures == 3                                                # the bad member is still listed
    assert not (out / ".partial").exists() and not list(out.rglob("*.tar"))
