"""Download throughput of ``landmark download --csv`` against a local server with latency.

Serves real photos of ``../shared/data/landmarks13/train`` (original sizes, 8 KB to
3.5 MB) from 127.0.0.1 with ``--latency`` seconds added to every answer (a stand-in
for a distant image host), and downloads ``--images`` of them with 1, 8 and 32 workers,
resizing to 256 px wide, and once with 32 workers keeping the originals (``max_width
0``: network only).  The per-host rate limit is off (all requests go to one host).
Prints images per second per configuration.

Usage:  python benchmarks/download_speed.py [--images 240] [--latency 0.05]
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from landmark.data import image_path
from landmark.data.download import DownloadOptions, download_csv

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "landmarks13"


def serve(files: dict[str, bytes], latency: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            time.sleep(latency)
            body = files.get(self.path.rsplit("/", 1)[-1])
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to every answer")
    args = parser.parse_args()
    with open(DATA / "train.csv") as fh:
        ids = [row["id"] for row in csv.DictReader(fh)][: args.images]
    files = {f"{i}.jpg": image_path(DATA, i).read_bytes() for i in ids}
    megabytes = sum(map(len, files.values())) / 2**20
    httpd = serve(files, args.latency)
    port = httpd.server_address[1]
    rows = []
    with tempfile.TemporaryDirectory(prefix="download_speed_") as tmp:
        source = Path(tmp) / "train.csv"
        with open(source, "w") as fh:
            fh.write("id,url,landmark_id\n" + "".join(f"{i},http://127.0.0.1:{port}/img/{i}.jpg,0\n" for i in ids))
        for workers, max_width in ((1, 256), (8, 256), (32, 256), (32, 0)):
            opts = DownloadOptions(workers=workers, max_width=max_width, rate_per_host=0, retries=1, timeout=30)
            t0 = time.perf_counter()
            report = download_csv(source, Path(tmp) / f"out_{workers}_{max_width}", opts, progress=False)
            seconds = time.perf_counter() - t0
            rows.append((workers, max_width, report.on_disk, report.failures, seconds))
    httpd.shutdown()
    print(f"{len(ids)} photos, {megabytes:.1f} MB in all, {args.latency * 1000:.0f} ms latency per request\n")
    print("| workers | max width (px) | saved | failed | seconds | images/s |\n|---:|---:|---:|---:|---:|---:|")
    for workers, max_width, saved, failed, seconds in rows:
        print(f"| {workers} | {max_width or 'original'} | {saved} | {failed} | {seconds:.1f} | {saved / seconds:.1f} |")


if __name__ == "__main__":
    main()
