"""Embeddings files survive a crash at any write step (`embed-merge --overwrite` killed at each
file operation leaves the old file or the new one), side files the user has are not replaced
unasked, and one shard runs in one process at a time."""
import fcntl
import json
import os

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from _faults import crash_points
from landmark.cli import app
from landmark.io import sidecar
from landmark.retrieval.embeddings import load_embeddings
from landmark.retrieval.shards import MANIFEST, embed_shard, merge_shards, part_name

MODEL = {"checkpoint": "/nowhere/a.pt", "sha256": "a" * 64, "image_size": 64, "backbone": "test", "runtime": "torch"}


def write_embeddings(path, x: np.ndarray, ids: list[str], model: dict | None = MODEL) -> None:
    """A finished embeddings file (the array, ids, rejects and its NAME.json record) from given
    vectors, written plainly: as any version of `landmark embed` leaves one."""
    np.save(path, x)
    pd.DataFrame({"id": ids, "landmark_id": "1"}).to_csv(sidecar(path, "ids.csv"), index=False)
    pd.DataFrame(columns=["id", "path", "reason"]).to_csv(sidecar(path, "rejects.csv"), index=False)
    sidecar(path, "json").write_text(json.dumps({"rows": len(x), "dim": x.shape[1], "dtype": "float32",
                                                 "image_size": 64, "model": model, "rejects": 0, "complete": True}))


def shard_folder(folder, parts: int, rows: int, seed: int, prefix: str, models=None):
    """A finished `embed --shard` folder of random unit vectors: ``parts`` parts of ``rows`` rows."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(parts * rows, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"{prefix}{i}" for i in range(parts * rows)]
    for k in range(parts):
        (folder / part_name(k)).mkdir()
        write_embeddings(folder / part_name(k) / "part.npy", x[k * rows:(k + 1) * rows], ids[k * rows:(k + 1) * rows],
                         (models or [MODEL] * parts)[k])
    (folder / MANIFEST).write_text(json.dumps({"rows": parts * rows, "part_size": rows, "parts": parts,
                                               "ids_sha256": "-", "dtype": "float32", "image_size": 64,
                                               "shards_of": 1, "top_classes": 0, "model_sha256": MODEL["sha256"]}))
    return x, ids


@pytest.mark.slow   # one forked child per file operation (about 40): 26 s on 2 shared cores at load 16
def test_merge_killed_at_every_step_leaves_the_old_or_the_new_file(tmp_path):
    old_x, old_ids = shard_folder(tmp_path / "old.shards", 2, 30, 0, "old")
    new_x, new_ids = shard_folder(tmp_path / "new.shards", 2, 15, 1, "new")
    out = tmp_path / "all.npy"
    merge_shards(tmp_path / "old.shards", out)

    def write():
        merge_shards(tmp_path / "new.shards", out, overwrite=True)
    seen = set()
    for k in crash_points(write):
        emb = load_embeddings(out)
        state = (emb.ids.tolist(), np.asarray(emb.vectors).tobytes())
        assert state in ((old_ids, old_x.tobytes()), (new_ids, new_x.tobytes())), f"crash before operation {k}"
        seen.add(len(emb))
        merge_shards(tmp_path / "old.shards", out, overwrite=True)   # back to the old state for the next crash
    assert seen == {60, 30}
    write()
    assert load_embeddings(out).ids.tolist() == new_ids and load_embeddings(out).model == MODEL
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        ".all.npy.lock", "all.ids.csv", "all.json", "all.npy", "all.rejects.csv"]


def test_merge_refuses_to_replace_any_side_file_unasked(tmp_path):
    shard_folder(tmp_path / "e.shards", 2, 5, 0, "p")
    (tmp_path / "all.ids.csv").write_text("id,landmark_id\nmine,7\n")   # a user's file, no all.npy beside it
    with pytest.raises(FileExistsError, match="all.ids.csv"):
        merge_shards(tmp_path / "e.shards", tmp_path / "all.npy")
    result = CliRunner().invoke(app, ["embed-merge", str(tmp_path / "e.shards"), "--out", str(tmp_path / "all.npy")])
    assert result.exit_code == 2 and "all.ids.csv exists" in result.output
    assert (tmp_path / "all.ids.csv").read_text() == "id,landmark_id\nmine,7\n" and not (tmp_path / "all.npy").exists()


def test_a_reader_refuses_an_array_longer_than_its_record(tmp_path):
    """A `.npy` whose rows disagree with NAME.json (as a killed writer of older versions left it:
    new rows and zeros beside the old record) is refused, not scored."""
    x = np.eye(4, 8, dtype=np.float32)
    write_embeddings(tmp_path / "e.npy", x, list("abcd"))
    np.save(tmp_path / "e.npy", np.concatenate([x, np.zeros((4, 8), np.float32)]))
    with pytest.raises(ValueError, match="unfinished"):
        load_embeddings(tmp_path / "e.npy")


def test_the_same_shard_twice_at_once_is_refused_and_keeps_the_others_work(tmp_path):
    folder = tmp_path / "e.shards"
    folder.mkdir()
    frame = pd.DataFrame({"id": ["a", "b"], "path": ["/nowhere/a.jpg", "/nowhere/b.jpg"]})
    running = folder / f".{part_name(0)}.tmp-12345"   # the work folder of the shard's running process
    running.mkdir()
    (running / "part.npy").write_bytes(b"half")
    fd = os.open(folder / ".shard-0-of-1.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # as that process holds it
    try:
        with pytest.raises(FileExistsError, match="in use by another landmark process"):
            embed_shard(None, {"size": 64}, frame, folder, shard=(0, 1), part_size=2)
    finally:
        os.close(fd)
    assert (running / "part.npy").read_bytes() == b"half"
