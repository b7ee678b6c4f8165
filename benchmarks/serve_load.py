"""Load benchmark of ``landmark serve``: concurrent clients against a server on 127.0.0.1.

Starts ``landmark serve MODEL`` in its own process on a free port of 127.0.0.1, then
``--clients`` asyncio clients (httpx) each post real photos (one per request, raw body) in
a loop for ``--seconds``, while ``--hostile-clients`` more post hostile uploads made in
memory here: a 1 x 39,000,000 PNG, a flat 6000 x 6600 PNG, a corrupt JPEG and a body over
the server's size limit.  A normal request that gets 503 (the server's in-flight memory
budget is full) is retried after its ``Retry-After``, as a client should, and one that meets
a transport error (a kept-alive connection the server closed after 5 idle seconds, when this
process gets too little CPU to reuse it in time) is sent once more; it fails when it then
gets anything else than 200 or 503.

Reports normal requests ok / failed (with their statuses), how often they were told to
retry, hostile requests by status, p50 / p95 latency of the normal ones and the server's
peak resident memory (``VmHWM`` of ``/proc/PID/status``), and exits with code 1 when a
normal request failed or the peak exceeds the ceiling that docs/serving.md states
(:data:`landmark.serving.settings.MEMORY_CEILING_MB`, or ``--ceiling-mb``).

Next to it (``--in-process-seconds``, 0 to skip), the same photos through
``Recognizer.recognize`` in this process, one photo per call and in batches of 16.

Without ``--model`` a stand-in checkpoint is built (ImageNet EfficientNet-Lite0 with a
random 13-class head at 128 px, landmarks13's names): the speed is the model's, the
answers are not meaningful.

    python benchmarks/serve_load.py                                 # 50 clients, 300 s
    nice -n 10 python benchmarks/serve_load.py --seconds 60 --in-process-seconds 0

Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import io
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "landmarks13"


def stand_in_model(folder: Path) -> Path:
    """A run folder with an ImageNet backbone and a random head (see the module docstring)."""
    import torch

    from landmark.data.gldv2 import landmark_names
    from landmark.models import create_model, save_checkpoint
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", 13, weights="imagenet")
    classes = [str(i) for i in range(13)]
    save_checkpoint(folder / "checkpoints" / "best.pt", model, classes, names=landmark_names(DATA, classes),
                    preprocess={"size": 128, "resize": 144, "mean": model.arch["mean"], "std": model.arch["std"]})
    return folder


def read_photos(folder: Path, limit: int) -> list[bytes]:
    files = sorted(f for f in folder.rglob("*.jpg") if f.is_file())[:limit]
    if not files:
        raise SystemExit(f"no .jpg photos under {folder}")
    return [f.read_bytes() for f in files]


def png(width: int, height: int, value: int = 200) -> bytes:
    """A real, complete 8-bit grey PNG of ``width`` x ``height`` pixels, all ``value`` (compresses to little)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    row = b"\x00" + bytes([value]) * width
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) if width > 1000 else \
        packer.compress(row * height)
    idat += packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def hostile_uploads(photo: bytes, max_bytes: int) -> dict[str, bytes]:
    """The hostile bodies of the module docstring, made in memory: ``thin`` (1 x 39,000,000 PNG),
    ``flat`` (6000 x 6600 PNG), ``corrupt`` (a JPEG cut short), ``oversized`` (1 MB over ``max_bytes``)."""
    return {"thin": png(1, 39_000_000), "flat": png(6000, 6600),
            "corrupt": photo[: len(photo) // 3] + bytes(range(256)) * 4,
            "oversized": random.Random(0).randbytes(max_bytes + 2**20)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, window_ms: float, threads: int | None, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "landmark.cli", "serve", str(model), "--host", "127.0.0.1",
                             "--port", str(port), "--batch-window-ms", str(window_ms)]
                            + (["--threads", str(threads)] if threads else []) + extra, env=env)
    import httpx
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the server did not start within 120 s")


class Memory(threading.Thread):
    """Samples the server's ``VmRSS`` every 0.2 s; :meth:`peak_mb` also reads ``VmHWM`` (the kernel's peak).
    A server above ``kill_mb`` is killed (the machine may be shared) and ``killed_at`` set."""

    def __init__(self, pid: int, kill_mb: float):
        super().__init__(daemon=True)
        self.pid, self.kill_mb, self.samples, self.done = pid, kill_mb, [], threading.Event()
        self.killed_at: float | None = None

    def field(self, name: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def run(self) -> None:
        while not self.done.wait(0.2):
            try:
                self.samples.append(self.field("VmRSS"))
            except OSError:
                return
            if self.samples[-1] > self.kill_mb:
                self.killed_at = self.samples[-1]
                os.kill(self.pid, 9)
                return

    def peak_mb(self) -> float:
        try:
            return max(self.field("VmHWM"), max(self.samples, default=0))
        except OSError:
            return max(self.samples, default=float("nan"))


async def load(port: int, photos: list[bytes], hostile: dict[str, bytes], clients: int, hostile_clients: int,
               seconds: float) -> dict:
    """Run the clients; latencies (s) of successful normal requests, counters, wall seconds."""
    import httpx
    out = {"latencies": [], "failed": collections.Counter(), "retries": 0, "resent": 0,
           "hostile": collections.defaultdict(collections.Counter)}
    url = f"http://127.0.0.1:{port}"
    # the attackers get connections of their own: a server that answers an oversized body
    # without reading it closes that connection, which must not be handed to a normal client
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as client, \
            httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=max(1, hostile_clients)),
                              ) as hostile_client:
        start = time.perf_counter()
        deadline = start + seconds

        async def post(body: bytes, ctype: str, via=client) -> int | str:
            try:
                return (await via.post("/v1/recognize", content=body, headers={"content-type": ctype})).status_code
            except httpx.HTTPError as err:
                return type(err).__name__

        async def normal(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                tic = time.perf_counter()
                status = await post(photos[i % len(photos)], "image/jpeg")
                if isinstance(status, str):   # a kept-alive connection the server closed as it was reused:
                    out["resent"] += 1         # sent again once, as browsers do; a second failure counts
                    status = await post(photos[i % len(photos)], "image/jpeg")
                while status == 503 and time.perf_counter() < deadline:   # told to come back: as a client should
                    out["retries"] += 1
                    await asyncio.sleep(1.0)
                    status = await post(photos[i % len(photos)], "image/jpeg")
                if status == 200:
                    out["latencies"].append(time.perf_counter() - tic)
                elif status != 503:
                    out["failed"][status] += 1
                i += clients

        async def attacker(k: int) -> None:
            kinds = list(hostile)
            i = k
            while time.perf_counter() < deadline:
                kind = kinds[i % len(kinds)]
                out["hostile"][kind][await post(hostile[kind], "image/png", hostile_client)] += 1
                i += 1

        await asyncio.gather(*[normal(k) for k in range(clients)], *[attacker(k) for k in range(hostile_clients)])
        out["wall"] = time.perf_counter() - start
        return out


def in_process(model: Path, photos: list[bytes], seconds: float, batch: int) -> tuple[list[float], float, int]:
    """Per-call latencies of ``Recognizer.recognize`` on ``batch`` photos per call; wall seconds; photos."""
    from landmark import Recognizer
    rec = Recognizer.load(model, device="cpu")
    for k in range(3):  # warm-up: first calls of a batch shape are slower
        rec.recognize(photos[k * batch:(k + 1) * batch] or photos[:batch])
    latencies, done, start = [], 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = [photos[(done + j) % len(photos)] for j in range(batch)]
        tic = time.perf_counter()
        rec.recognize(chunk)
        latencies.append(time.perf_counter() - tic)
        done += batch
    return latencies, time.perf_counter() - start, done


def row(route: str, clients: str, requests: int, failed: int | str, per_s: float, lat: list[float]) -> str:
    p50, p95 = (np.percentile(lat, 50) * 1000, np.percentile(lat, 95) * 1000) if lat else (float("nan"),) * 2
    return f"| {route} | {clients} | {requests} | {failed} | {per_s:.1f} | {p50:.0f} | {p95:.0f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="run folder or checkpoint (default: a stand-in, see --help)")
    parser.add_argument("--photos", type=Path, default=DATA / "test")
    parser.add_argument("--max-photos", type=int, default=200)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--hostile-clients", type=int, default=2, help="clients posting hostile uploads (0: none)")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--window-ms", type=float, default=10.0, help="server's micro-batching window")
    parser.add_argument("--threads", type=int, help="torch CPU threads, server and in-process (default: torch's)")
    parser.add_argument("--ceiling-mb", type=float, help="peak server memory allowed (default: docs/serving.md's)")
    parser.add_argument("--kill-mb", type=float, help="kill the server above this resident memory (default: 3 x "
                                                      "the ceiling), so a runaway server cannot take a shared machine")
    parser.add_argument("--hostile", default="thin,flat,corrupt,oversized",
                        help="hostile kinds to mix in (comma-separated): thin, flat, corrupt, oversized")
    parser.add_argument("--in-process-seconds", type=float, default=10.0, help="each in-process row (0: skip)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `landmark serve` argument "
                                                                          "(repeat), e.g. --server-arg=--max-mb=5")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "src"))
    from landmark.serving.settings import MEMORY_CEILING_MB, ServeSettings
    ceiling = args.ceiling_mb or MEMORY_CEILING_MB
    photos = read_photos(args.photos, args.max_photos)
    kinds = [k for k in args.hostile.split(",") if k]
    made = hostile_uploads(photos[0], int(ServeSettings().max_mb * 2**20))
    unknown = set(kinds) - set(made)
    if unknown:
        raise SystemExit(f"--hostile {','.join(sorted(unknown))}: choose from {','.join(made)}")
    hostile = {k: made[k] for k in kinds} if args.hostile_clients else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or stand_in_model(Path(tmp) / "run")
        if args.in_process_seconds > 0:
            single, single_wall, single_n = in_process(model, photos, args.in_process_seconds, 1)
            batched, batched_wall, batched_n = in_process(model, photos, args.in_process_seconds, 16)
            rows = [row("in process, Recognizer.recognize(1 photo)", "1", len(single), "-", single_n / single_wall,
                        single),
                    row("in process, Recognizer.recognize(16 photos)", "1", len(batched), "-",
                        batched_n / batched_wall, batched)]
        port = free_port()
        server = start_server(model, port, args.window_ms, args.threads, args.server_arg)
        memory = Memory(server.pid, args.kill_mb or 3 * ceiling)
        idle = memory.field("VmRSS")
        memory.start()
        try:
            result = asyncio.run(load(port, photos, hostile, args.clients, args.hostile_clients, args.seconds))
            peak = memory.peak_mb() if memory.killed_at is None else memory.killed_at
        finally:
            memory.done.set()
            server.terminate()
            server.wait(timeout=30)
    latencies, failed = result["latencies"], result["failed"]
    print(f"{len(photos)} photos from {args.photos}; {os.cpu_count()} CPU cores (load average "
          f"{os.getloadavg()[0]:.1f} at the end); torch threads {args.threads or 'default'}; "
          f"model {args.model or 'stand-in'}; {args.seconds:g} s; server arguments {args.server_arg or 'default'}")
    print()
    print("| route | clients | requests | failed | photos/s | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|")
    print(row(f"HTTP POST /v1/recognize, {args.window_ms:g} ms batching window", str(args.clients),
              len(latencies), sum(failed.values()), len(latencies) / result["wall"], latencies))
    for line in rows:
        print(line)
    print()
    print(f"normal requests: {len(latencies)} ok, {sum(failed.values())} failed {dict(failed) or ''}; "
          f"told to retry (503) {result['retries']} times; sent again after a transport error "
          f"{result['resent']} times")
    for kind, statuses in result["hostile"].items():
        print(f"hostile {kind}: {dict(statuses)}")
    if memory.killed_at is not None:
        print(f"the server was KILLED at {memory.killed_at:.0f} MB (above --kill-mb)")
    verdict = "within" if peak <= ceiling else "OVER"
    print(f"server memory: {idle:.0f} MB when started, peak (VmHWM) {peak:.0f} MB, {verdict} the ceiling of "
          f"{ceiling:.0f} MB")
    if rows:
        print("Latency of the in-process rows is per call (16 photos for the last).")
    return 1 if failed or not latencies or peak > ceiling else 0


if __name__ == "__main__":
    sys.exit(main())
