"""Sharded, resumable embedding: a run killed mid-way and restarted embeds every photo
exactly once, shards split the work, and the merge equals an unsharded embedding."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from landmark.cli import app
from landmark.models import create_model, save_checkpoint
from landmark.retrieval.embeddings import embed_images, load_embeddings
from landmark.retrieval.shards import embed_shard, merge_shards, parse_shard, shard_parts

SRC = Path(__file__).resolve().parents[1] / "src"
PREPROCESS = {"size": 64, "resize": 72, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture(scope="module")
def setup(l13, tmp_path_factory):
    """A tiny checkpoint and a CSV of 40 real photos plus one unreadable file."""
    work = tmp_path_factory.mktemp("shards")
    torch.manual_seed(0)
    model = create_model("test_efficientnet", 3, weights="none").eval()
    save_checkpoint(work / "m.pt", model, ["a", "b", "c"], preprocess=PREPROCESS)
    files = sorted((l13 / "train").rglob("*.jpg"))[:40]
    (work / "broken.jpg").write_bytes(b"not an image")
    files.insert(17, work / "broken.jpg")
    frame = pd.DataFrame({"id": [f.stem for f in files], "path": [str(f) for f in files]})
    frame.to_csv(work / "photos.csv", index=False)
    return work, model, frame


def test_parse_shard_and_parts():
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    assert shard_parts(41, 5, (0, 3)) == [0, 3, 6] and shard_parts(41, 5, (2, 3)) == [2, 5, 8]


def _cli(work: Path, out: Path, shard: str) -> list[str]:
    return [sys.executable, "-m", "landmark.cli", "embed", str(work / "m.pt"), "--images", str(work / "photos.csv"),
            "--out", str(out), "--shard", shard, "--part-size", "3", "--workers", "0", "--batch-size", "1",
            "--dtype", "float32", "--image-size", "128"]


def test_killed_run_resumes_and_embeds_every_photo_once(setup, tmp_path):
    work, model, frame = setup
    out = tmp_path / "emb.shards"
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cli(work, out, "0/1"), env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600   # generous: on a loaded shared CPU the start alone can take minutes
    while time.time() < deadline and proc.poll() is None and not (out / "part-00002").is_dir():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in out.glob("part-*"))
    assert 3 <= len(done) < 14, "the run was not killed mid-way"
    # restart: skips the finished parts, writes the rest
    result = subprocess.run(_cli(work, out, "0/1"), env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["parts"] == 14 and summary["done_before"] == len(done) and summary["embedded"] == 14 - len(done)
    assert not list(out.glob(".part-*"))   # no temporary folder left
    merged = merge_shards(out, tmp_path / "all.npy")
    assert merged["rows"] == 40 and merged["rejects"] == 1
    emb = load_embeddings(tmp_path / "all.npy")
    good = frame[frame["id"] != "broken"]
    assert emb.ids.tolist() == good["id"].tolist()   # every photo once, in order
    reference, _ = embed_images(model, PREPROCESS, frame, tmp_path / "ref.npy", dtype="float32", image_size=128,
                                workers=0)
    np.testing.assert_allclose(emb.vectors, reference.vectors, atol=1e-5)


def test_two_shards_split_the_work_and_merge(setup, tmp_path):
    work, model, frame = setup
    out = tmp_path / "emb.shards"
    first = embed_shard(model, PREPROCESS, frame, out, shard=(0, 2), part_size=8, workers=0)
    # parts 0, 2, 4 of 8 rows; part 2 holds the broken file
    assert first["parts"] == 3 and first["embedded"] == 3 and first["rows"] == 23
    runner = CliRunner()
    result = runner.invoke(app, ["embed-merge", str(out), "--out", str(tmp_path / "all.npy")])
    assert result.exit_code == 2 and "finish shard(s) 1/2" in result.output
    second = embed_shard(model, PREPROCESS, frame, out, shard=(1, 2), part_size=8, workers=0)
    assert second["embedded"] == 3 and second["rows"] == 17
    again = embed_shard(model, PREPROCESS, frame, out, shard=(1, 2), part_size=8, workers=0)
    assert again["done_before"] == 3 and again["embedded"] == 0
    with pytest.raises(ValueError, match="another run"):
        embed_shard(model, PREPROCESS, frame.head(30), out, shard=(0, 2), part_size=8, workers=0)
    result = runner.invoke(app, ["embed-merge", str(out), "--out", str(tmp_path / "all.npy")])
    assert result.exit_code == 0, result.output
    emb = load_embeddings(tmp_path / "all.npy")
    assert len(emb) == 40 and emb.ids.tolist() == frame.loc[frame["id"] != "broken", "id"].tolist()
    reference, _ = embed_images(model, PREPROCESS, frame, tmp_path / "ref.npy", workers=0)
    np.testing.assert_allclose(emb.vectors.astype(np.float32), reference.vectors.astype(np.float32), atol=1e-3)
    result = runner.invoke(app, ["embed-merge", str(out), "--out", str(tmp_path / "all.npy")])
    assert result.exit_code == 2 and "exist" in result.output
