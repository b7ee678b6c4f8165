"""A misbehaving HTTP server on 127.0.0.1 for download tests and benchmarks.

Routes (GET):
    /img/<name>            bytes of ``files[name]``
    /static/<path>         a file below ``static_root``
    /status/<code>         an empty response with that status
    /flaky/<key>           500 on the first request per key, then ``files['photo']``
    /flaky-reset/<key>     connection reset on the first request per key, then the photo
    /reset                 connection reset (RST) before any response
    /slow                  sleeps ``slow_s`` before answering (client times out)
    /drip                  headers at once, then 1 KB every 0.2 s (a slow body)
    /truncated             announces the photo's length, sends half, closes
    /html                  a 403-style HTML page with status 200
    /redirect/<name>       302 to /img/<name>
    /loop                  302 to itself
Every request path is recorded in ``hits`` (a Counter); ``latency_s`` delays every answer.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` 8-bit grey pixels but holds only 16 rows."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


HTML = b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head><body>Forbidden</body></html>"


class FaultyServer:
    """Context manager running the server in a daemon thread; ``url(path)`` gives full URLs."""

    def __init__(self, files: dict[str, bytes], static_root: Path | None = None, latency_s: float = 0.0,
                 slow_s: float = 2.0):
        self.files, self.static_root, self.latency_s, self.slow_s = files, static_root, latency_s, slow_s
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def finish(self) -> None:
                try:
                    super().finish()
                except OSError:
                    pass

            def send(self, code: int, body: bytes = b"", ctype: str = "image/jpeg", headers: dict | None = None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def reset(self) -> None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def first_time(self, key: str) -> bool:
                with server._lock:
                    new = key not in server._seen
                    server._seen.add(key)
                return new

            def do_GET(self) -> None:  # noqa: N802
                path = self.path
                with server._lock:
                    server.hits[path] += 1
                if server.latency_s:
                    time.sleep(server.latency_s)
                parts = path.strip("/").split("/", 1)
                route, arg = parts[0], (parts[1] if len(parts) > 1 else "")
                photo = server.files.get("photo", b"")
                if route == "img" and arg in server.files:
                    self.send(200, server.files[arg])
                elif route == "static" and server.static_root and (server.static_root / arg).is_file():
                    self.send(200, (server.static_root / arg).read_bytes(), "application/octet-stream")
                elif route == "status":
                    self.send(int(arg), b"", "text/plain", {"Retry-After": "0"})
                elif route == "flaky":
                    self.send(500, b"", "text/plain") if self.first_time(path) else self.send(200, photo)
                elif route == "flaky-reset":
                    self.reset() if self.first_time(path) else self.send(200, photo)
                elif route == "reset":
                    self.reset()
                elif route == "slow":
                    time.sleep(server.slow_s)
                    self.send(200, photo)
                elif route == "drip":
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    try:
                        for _ in range(int(server.slow_s / 0.2) + 1):
                            self.wfile.write(b"\xff" * 1000)
                            self.wfile.flush()
                            time.sleep(0.2)
                    except OSError:
                        pass
                    self.close_connection = True
                elif route == "truncated":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(photo)))
                    self.end_headers()
                    self.wfile.write(photo[: len(photo) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif route == "html":
                    self.send(200, HTML, "text/html")
                elif route == "redirect":
                    self.send(302, b"", "text/plain", {"Location": f"/img/{arg}"})
                elif route == "loop":
                    self.send(302, b"", "text/plain", {"Location": "/loop"})
                else:
                    self.send(404, b"not found", "text/plain")

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:  # clients hang up on purpose
                pass

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> "FaultyServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
