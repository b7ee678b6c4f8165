"""Settings of `landmark serve`, `recognize` and `index build` that used to hang the server,
answer every photo alike, crash after writing, or replace a user's files: each bound lives in
one place in the library and is refused in one line."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """`landmark ARGS` in a fresh interpreter on this checkout; prints whether torch got imported."""
    code = ("import sys\nimport landmark.cli as c\nsys.argv = ['landmark', *sys.argv[1:]]\n"
            "try:\n    c.main()\nfinally:\n    print('TORCH', 'torch' in sys.modules, file=sys.stderr)")
    env = {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _error_line(done: subprocess.CompletedProcess) -> str:
    lines = [x for x in done.stderr.splitlines() if not x.startswith("TORCH")]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr   # one line, no traceback
    return lines[0]


@pytest.mark.parametrize("window", [float("inf"), 1e9, -1.0, float("nan")])
def test_batching_window_is_bounded(window):
    from landmark.serving.batching import Batcher
    from landmark.serving.settings import settings
    with pytest.raises(ValueError, match="batch-window-ms"):
        settings(batch_window_ms=window)
    with pytest.raises(ValueError, match="batching window"):
        Batcher(recognizer=None, window=window)   # the library's own bound, whoever calls it


@pytest.mark.parametrize("threshold", [-1.0, 5.0, 1e308, float("nan")])
def test_threshold_lies_in_0_1(recognizer_run, threshold):
    from landmark import Recognizer
    from landmark.retrieval.config import check_threshold
    from landmark.serving.settings import settings
    for check in (check_threshold, lambda t: settings(threshold=t),
                  lambda t: Recognizer.load(recognizer_run, threshold=t)):
        with pytest.raises(ValueError, match="between 0 and 1|finite number"):
            check(threshold)
    assert check_threshold(0.0) == 0.0 and check_threshold(1.0) == 1.0


@pytest.mark.parametrize("command", ["recognize", "serve"])
def test_cli_refuses_bad_settings_in_one_line_before_torch(recognizer_run, command, tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"x")
    base = ["recognize", str(photo), "--model", str(recognizer_run)] if command == "recognize" else \
        ["serve", str(recognizer_run), "--port", "1"]
    cases = [["--threshold", "5"], ["--threshold", "-1"], ["--threshold", "1e308"]]
    if command == "serve":
        cases += [["--batch-window-ms", "inf"], ["--batch-window-ms", "1e9"], ["--token", ""],
                  ["--token", "\u00a0"]]
    for extra in cases:
        done = _cli(base + extra, timeout=60)   # before the fix `serve --batch-window-ms inf` served (timeout)
        line = _error_line(done)
        assert "TORCH False" in done.stderr, (extra, done.stderr)
        assert ("threshold" in line) if extra[0] == "--threshold" else (extra[0] in line), (extra, line)


def test_port_in_use_is_one_error_line(recognizer_run):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = _cli(["serve", str(recognizer_run), "--port", str(port)], timeout=120)
    line = _error_line(done)
    assert f"127.0.0.1:{port} is in use" in line and "--port" in line
    assert "TORCH False" in done.stderr   # found before the model loads


def _embeddings(n: int, tmp_path: Path) -> Path:
    """An embeddings file of ``n`` random unit vectors (16-d), as `landmark embed` writes it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    out = tmp_path / "emb.npy"
    np.save(out, x / np.linalg.norm(x, axis=1, keepdims=True))
    out.with_suffix(".ids.csv").write_text("id,landmark_id\n" + "".join(f"p{k},{k % 3}\n" for k in range(n)))
    out.with_suffix(".json").write_text(json.dumps({"rows": n}))
    return out


def test_ivf_cells_are_checked_against_the_vectors_before_anything_is_written(tmp_path, l13):
    from landmark.retrieval.config import IndexParams
    from landmark.retrieval.pipeline import build_index, index_embeddings
    emb_file = _embeddings(24, tmp_path)
    params = IndexParams(kind="ivf", nlist=1000)
    emb, _, _ = index_embeddings(embeddings=emb_file)
    with pytest.raises(ValueError, match="at most 24 cells"):
        build_index(emb, tmp_path / "idx", params=params)
    assert not (tmp_path / "idx").exists()
    with pytest.raises(ValueError, match="--nlist 1000"):
        index_embeddings(embeddings=emb_file, params=params)
    # photos to embed: refused before the model is even opened (no checkpoint here) and nothing written
    with pytest.raises(ValueError, match="--nlist 1000"):
        index_embeddings(checkpoint=tmp_path / "none.pt", data=l13, landmarks=["9"], params=params,
                         out=tmp_path / "idx" / "embeddings.npy")
    assert not (tmp_path / "idx").exists()
    assert build_index(emb, tmp_path / "ok", params=IndexParams(kind="ivf", nlist=0))["count"] == 24
    done = _cli(["index", "build", "--embeddings", str(emb_file), "--out", str(tmp_path / "cli"), "--kind", "ivf",
                 "--nlist", "1000"])
    assert "--nlist 1000" in _error_line(done) and not (tmp_path / "cli").exists()


def test_explain_refuses_to_replace_a_matches_picture(recognizer_run, recognizer_index, l13, tmp_path):
    from landmark.data import image_path
    photo = image_path(l13, "0003de5a85b027b5", "test")
    why = tmp_path / "why"
    why.mkdir()
    mine = why / f"000_{photo.stem}.matches.png"
    mine.write_bytes(b"my own picture")
    done = _cli(["recognize", str(photo), "--model", str(recognizer_run), "--index", str(recognizer_index),
                 "--explain", str(why)], timeout=300)
    assert "--overwrite" in _error_line(done) and "TORCH False" in done.stderr
    assert mine.read_bytes() == b"my own picture" and not list(why.glob("*.saliency.png"))


def test_serve_defaults_agree_with_the_upload_limits():
    """`landmark serve`'s defaults (settings.py) and create_app's (uploads.Limits) are the same limits."""
    from landmark.serving import Limits
    from landmark.serving.settings import ServeSettings
    assert ServeSettings().max_pixels == Limits().max_pixels
    assert int(ServeSettings().max_mb * 2**20) == Limits().max_bytes
