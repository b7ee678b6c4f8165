"""Load benchmark of ``landmark serve``: concurrent clients against a server on 127.0.0.1.

Starts ``landmark serve MODEL`` in its own process on a free port, then ``--clients``
asyncio clients (httpx) each post real photos (one per request, raw body) in a loop for
``--seconds``; counts failed requests (anything but 200, or a transport error) and
reports requests/s and p50/p99 latency.  Next to it, the same photos through
``Recognizer.recognize`` in this process, one photo per call and in batches of 16, so the
table shows what HTTP, decoding in the server and micro-batching cost.

Without ``--model`` a stand-in checkpoint is built (ImageNet EfficientNet-Lite0 with a
random 13-class head at 128 px, landmarks13's names): the speed is the model's, the
answers are not meaningful.

    python benchmarks/serve_load.py --clients 50 --seconds 60          # the issue's setting
    python benchmarks/serve_load.py --model runs/l13 --clients 20 --seconds 20

Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, window_ms: float, threads: int | None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "landmark.cli", "serve", str(model), "--port", str(port),
                             "--batch-window-ms", str(window_ms)] + (["--threads", str(threads)] if threads else []),
                            env=env)
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


async def load(port: int, photos: list[bytes], clients: int, seconds: float) -> tuple[list[float], int, float]:
    """Latencies (s) of successful requests, failures, wall seconds."""
    import httpx
    latencies: list[float] = []
    failed = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=120) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def one_client(k: int) -> None:
            nonlocal failed
            i = k
            while time.perf_counter() < deadline:
                tic = time.perf_counter()
                try:
                    res = await client.post("/v1/recognize", content=photos[i % len(photos)],
                                            headers={"content-type": "image/jpeg"})
                    ok = res.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - tic)
                else:
                    failed += 1
                i += clients

        await asyncio.gather(*[one_client(k) for k in range(clients)])
        return latencies, failed, time.perf_counter() - start


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
    p50, p99 = (np.percentile(lat, 50) * 1000, np.percentile(lat, 99) * 1000) if lat else (float("nan"),) * 2
    return f"| {route} | {clients} | {requests} | {failed} | {per_s:.1f} | {p50:.0f} | {p99:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="run folder or checkpoint (default: a stand-in, see --help)")
    parser.add_argument("--photos", type=Path, default=DATA / "test")
    parser.add_argument("--max-photos", type=int, default=200)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--window-ms", type=float, default=10.0, help="server's micro-batching window")
    parser.add_argument("--threads", type=int, help="torch CPU threads, server and in-process (default: torch's)")
    parser.add_argument("--in-process-seconds", type=float, help="each in-process row (default: max(10, seconds/2))")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "src"))
    photos = read_photos(args.photos, args.max_photos)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or stand_in_model(Path(tmp) / "run")
        quiet = args.in_process_seconds or max(10.0, args.seconds / 2)
        single, single_wall, single_n = in_process(model, photos, quiet, 1)
        batched, batched_wall, batched_n = in_process(model, photos, quiet, 16)
        port = free_port()
        server = start_server(model, port, args.window_ms, args.threads)
        try:
            latencies, failed, wall = asyncio.run(load(port, photos, args.clients, args.seconds))
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"{len(photos)} photos from {args.photos}; {os.cpu_count()} CPU cores (load average "
          f"{os.getloadavg()[0]:.1f} at the end); torch threads {args.threads or 'default'}; "
          f"model {args.model or 'stand-in'}")
    print()
    print("| route | clients | requests | failed | photos/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    print(row(f"HTTP POST /v1/recognize, {args.window_ms:g} ms batching window", str(args.clients),
              len(latencies), failed, len(latencies) / wall, latencies))
    print(row("in process, Recognizer.recognize(1 photo)", "1", len(single), "-", single_n / single_wall, single))
    print(row("in process, Recognizer.recognize(16 photos)", "1", len(batched), "-", batched_n / batched_wall,
              batched))
    print()
    print("Latency of the in-process rows is per call (16 photos for the last).")


if __name__ == "__main__":
    main()
