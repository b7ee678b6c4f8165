"""Helpers shared by several test modules (import as ``from _helpers import ...``)."""
from __future__ import annotations

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
