"""An index folder survives a crash at any write step and two writers at once: it always
loads as the old index or the new one, and concurrent enrolments both keep their photos."""
import json
import os
import shutil
import time

import faiss
import numpy as np
import pandas as pd
import pytest

from _faults import crash_points
from landmark.retrieval.embeddings import Embeddings
from landmark.retrieval.index import IndexParams, LandmarkIndex
from landmark.retrieval.pipeline import enrol


def vectors(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def photos(n: int, prefix: str, landmark: str = "1", seed: int = 0) -> Embeddings:
    items = pd.DataFrame({"id": [f"{prefix}{i}" for i in range(n)], "landmark_id": landmark,
                          "path": [f"/nowhere/{prefix}{i}.jpg" for i in range(n)]})
    return Embeddings(vectors(n, seed=seed), items)


@pytest.fixture
def saved(tmp_path):
    """A saved flat index of 30 photos and a pristine copy of its folder."""
    folder = tmp_path / "idx"
    LandmarkIndex.build(photos(30, "old"), IndexParams(kind="flat"), {"names": {"1": "A"}}).save(folder)
    shutil.copytree(folder, tmp_path / "pristine")
    return folder, tmp_path / "pristine"


def state(folder) -> tuple[list[str], int]:
    """(ids, vectors) of the index as loaded: consistent or the load raises."""
    index = LandmarkIndex.load(folder)
    assert len(index.items) == len(index)
    sims, rows = index.search(vectors(30, seed=0)[:1], 1)   # the vectors are the items' own
    assert rows[0, 0] == 0 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    return index.items["id"].tolist(), len(index)


def restore(folder, pristine) -> None:
    shutil.rmtree(folder)
    shutil.copytree(pristine, folder)


@pytest.mark.slow   # one forked child per file operation: 12-15 s on 2 shared cores at load 16
@pytest.mark.parametrize("writer", ["enrol", "save"])
def test_crash_at_every_write_step_leaves_the_old_or_the_new_index(saved, writer):
    folder, pristine = saved
    old = state(folder)
    new_ids = old[0] + [f"new{i}" for i in range(5)]
    if writer == "enrol":   # `index add` and the server's enrolment: reload under the lock, add, save
        def write():
            enrol(folder, photos(5, "new", seed=1), names={"2": "B"})
    else:                   # a whole index saved over an existing one (`index build --overwrite`)
        index = LandmarkIndex.load(folder)
        index.add(photos(5, "new", seed=1))

        def write():
            index.save(folder, overwrite=True)
    seen = set()
    points = 0
    for k in crash_points(write):
        ids, count = state(folder)
        assert ids in (old[0], new_ids), f"crash before file operation {k}: {len(ids)} ids"
        seen.add(len(ids))
        points += 1
        # the next write after the crash succeeds and cleans up what the killed one left
        write()
        assert state(folder)[0] == new_ids
        assert sorted(p.name for p in folder.iterdir() if p.name != ".lock") == ["index.faiss", "items.csv",
                                                                               "meta.json"]
        restore(folder, pristine)
    assert seen == {30, 35} and points >= 8   # crashes before and after the switch were both tried


def test_index_of_an_older_version_still_loads_and_is_upgraded_by_the_next_write(tmp_path):
    """A folder as written before versions: meta.json without 'files'."""
    folder = tmp_path / "idx"
    folder.mkdir()
    index = faiss.IndexFlatIP(16)
    index.add(vectors(30))
    faiss.write_index(index, str(folder / "index.faiss"))
    photos(30, "old").items.to_csv(folder / "items.csv", index=False)
    (folder / "meta.json").write_text(json.dumps({"model": {}, "kind": "flat", "dim": 16, "count": 30,
                                                  "landmarks": 1, "params": IndexParams(kind="flat").model_dump()}))
    assert state(folder)[1] == 30
    enrol(folder, photos(5, "new", seed=1))
    assert state(folder)[1] == 35 and json.loads((folder / "meta.json").read_text())["files"] == {
        "index.faiss": "index.faiss", "items.csv": "items.csv"}


def test_two_writers_at_once_both_keep_their_photos(saved):
    """Two processes enrol into one folder at the same moment (as two servers on one index):
    the second waits for the first's lock, reloads, and both photos survive."""
    folder, _ = saved
    children = []
    for prefix in ("a", "b"):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                faiss.omp_set_num_threads(1)

                def slow_add(index, prefix=prefix):
                    time.sleep(0.3)   # both have loaded the same index before either saves, on main
                    return index.add(photos(3, prefix, seed=2))
                LandmarkIndex.update(folder, slow_add)
                status = 0
            finally:
                os._exit(status)
        children.append(pid)
    assert all(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 for pid in children)
    ids = LandmarkIndex.load(folder).items["id"].tolist()
    assert len(ids) == 36 and {"a0", "a2", "b0", "b2"} <= set(ids)


def test_a_reader_during_a_save_sees_one_whole_index(saved):
    """Reads interleaved with saves (forked writer saving 20 times) always get a consistent index."""
    folder, _ = saved
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            faiss.omp_set_num_threads(1)
            for k in range(20):
                enrol(folder, photos(1, f"w{k}-", seed=10 + k))
            status = 0
        finally:
            os._exit(status)
    counts = set()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        ids, count = state(folder)
        assert len(ids) == count
        counts.add(count)
        if done:
            break
    assert os.waitstatus_to_exitcode(status) == 0 and state(folder)[1] == 50


def test_two_servers_on_one_index_keep_both_enrolments(recognizer_run, recognizer_index, l13, tmp_path):
    """Two servers started on one index folder each enrol a photo: both are in the saved index
    (on main the second save dropped the first server's photo), and the second server answers
    with both."""
    from fastapi.testclient import TestClient

    from landmark import Recognizer
    from landmark.data.gldv2 import image_path
    from landmark.serving import create_app
    folder = tmp_path / "idx"
    shutil.copytree(recognizer_index, folder)
    before = len(LandmarkIndex.load(folder))
    train = pd.read_csv(l13 / "train.csv", dtype=str)
    first, second = sorted(train.loc[train["landmark_id"] == "10", "id"])[:2]
    apps = [create_app(Recognizer.load(recognizer_run, index=folder), token="t", index_dir=folder) for _ in range(2)]
    with TestClient(apps[0]) as a, TestClient(apps[1]) as b:
        for client, photo in ((a, first), (b, second)):
            res = client.post("/v1/landmarks/10/images", headers={"Authorization": "Bearer t"},
                              files=[("file", ("p.jpg", image_path(l13, photo).read_bytes(), "image/jpeg"))])
            assert res.status_code == 200 and res.json()["added"] == 1, res.text
        assert res.json()["references"] == 2   # the second server saw the first's photo
    assert len(LandmarkIndex.load(folder)) == before + 2


def test_a_file_changed_after_it_was_written_is_refused(saved):
    """meta.json records each file's size: items.csv with a row appended by hand (the count
    check alone would pass if faiss also grew) or index.faiss cut short is refused."""
    folder, _ = saved
    with open(folder / "items.csv", "a") as f:
        f.write("x,1,/nowhere/x.jpg\n")
    with pytest.raises(ValueError, match="items.csv is damaged: .* bytes, .*meta.json says"):
        LandmarkIndex.load(folder)
