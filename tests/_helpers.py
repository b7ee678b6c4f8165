"""Helpers shared by several test modules (import as ``from _helpers import ...``)."""
from __future__ import annotations

import contextlib
import struct
import sys
import zlib
from pathlib import Path

#: the preprocessing of the tiny untrained checkpoints the upload tests serve
TINY_PREPROCESS = {"size": 32, "resize": 40, "mean": [0.5] * 3, "std": [0.5] * 3}


def run(monkeypatch, capsys, *args) -> tuple[int, str]:
    """``landmark ARGS`` in this process: (exit code, stdout + stderr)."""
    from landmark.cli import main
    monkeypatch.setattr(sys, "argv", ["landmark", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as done:
        code = done.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def blank_png(width: int, height: int) -> bytes:
    """A real greyscale PNG of ``width`` x ``height`` black pixels, compressed by hand (1 x 39,000,000
    px: 76 KB in 2 s, where Pillow's encoder takes 8 s)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    pixels = zlib.compress(bytes((width + 1) * height), 9)   # each row: filter byte 0, then the pixels
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def tiny_checkpoint(path: Path, preprocess: dict):
    """An untrained 3-class ``test_efficientnet`` (seed 0), in eval mode, saved at ``path`` with
    ``preprocess`` and classes a, b, c; returns the model."""
    import torch

    from landmark.models import create_model, save_checkpoint
    torch.manual_seed(0)
    model = create_model("test_efficientnet", 3, weights="none").eval()
    save_checkpoint(path, model, ["a", "b", "c"], preprocess=preprocess)
    return model


def tiny_recognizer(folder: Path):
    """A ``Recognizer`` of an untrained 2-class EfficientNet-Lite0 at 32 px (no index), saved in ``folder``."""
    import torch

    from landmark import Recognizer
    from landmark.models import create_model, save_checkpoint
    torch.manual_seed(0)
    path = folder / "m.pt"
    save_checkpoint(path, create_model("tf_efficientnet_lite0", 2, weights="none"), ["a", "b"],
                    preprocess=TINY_PREPROCESS)
    return Recognizer.load(path, index=False)


@contextlib.contextmanager
def serve_in_thread(app):
    """Run the ASGI ``app`` with uvicorn in a thread on a free 127.0.0.1 port; yields the port,
    stops the server on leaving."""
    import socket
    import threading
    import time

    import uvicorn
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def open_page(playwright, chromium, errors: list):
    """A page of Debian's Chromium (``chromium``: its path) that appends console errors and
    page errors to ``errors``; returns ``(browser, page)``."""
    browser = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return browser, page


def answered(xmp: dict) -> str:
    """The landmark id a ``landmark tag`` sidecar records (:func:`landmark.inference.tagging.read_xmp`'s
    dict): the landmark's (``landmarkId``), else, for a photo of no landmark, the best guess's
    (``bestGuessId``)."""
    return (xmp.get("Xmp.landmark.landmarkId") or xmp["Xmp.landmark.bestGuessId"])[0]
