"""A completion record (an index's ``meta.json``, an embeddings file's ``NAME.json``) is
read like any file from someone else: the files it names must be plain names inside its
own folder and regular files, so a hostile record can neither make a reader open a file
elsewhere (``/etc/passwd``, ``../other/index.faiss``, ``/dev/zero``) nor block it on a FIFO;
a record naming another index kind, or nested past the JSON parser's depth, is refused in
one line instead of a FAISS or recursion traceback."""
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from landmark.retrieval.embeddings import Embeddings, load_embeddings
from landmark.retrieval.index import IndexParams, LandmarkIndex


def photos(n: int = 12, d: int = 16) -> Embeddings:
    x = np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)
    items = pd.DataFrame({"id": [f"p{i}" for i in range(n)], "landmark_id": "1", "path": ""})
    return Embeddings(x / np.linalg.norm(x, axis=1, keepdims=True), items)


@pytest.fixture
def index_folder(tmp_path):
    folder = tmp_path / "idx"
    LandmarkIndex.build(photos(), IndexParams(kind="flat"), {}).save(folder)
    return folder



def edit(marker, change) -> None:
    record = json.loads(marker.read_text())
    change(record)
    marker.write_text(json.dumps(record))


def test_a_good_index_still_loads(index_folder):
    assert len(LandmarkIndex.load(index_folder)) == 12


@pytest.mark.parametrize("name", ["/etc/passwd", "../../../../../etc/passwd", "/dev/zero", 5, "", "..",
                                  "sub/items.csv"])
def test_an_index_record_naming_a_file_outside_its_folder_is_refused(index_folder, name, no_hang):
    def change(meta):
        meta["files"]["items.csv"] = name
        meta.pop("bytes")   # an old-style record without sizes: nothing else would catch it
    edit(index_folder / "meta.json", change)
    with pytest.raises(ValueError, match="is not a valid record"):
        LandmarkIndex.load(index_folder)


def test_an_index_record_pointing_at_another_whole_index_is_refused(index_folder, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(index_folder, other)
    edit(index_folder / "meta.json",
         lambda meta: meta["files"].update({n: str(other / n) for n in ("index.faiss", "items.csv")}))
    with pytest.raises(ValueError, match="is not a valid record"):
        LandmarkIndex.load(index_folder)


def test_an_index_file_that_is_a_fifo_is_refused_without_blocking(index_folder, no_hang):
    (index_folder / "items.csv").unlink()
    os.mkfifo(index_folder / "items.csv")
    with pytest.raises(ValueError, match="not a regular file"):
        LandmarkIndex.load(index_folder)


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq", "rm -rf", 3])
def test_an_index_record_naming_another_kind_is_refused(index_folder, kind):
    edit(index_folder / "meta.json", lambda meta: meta.update(kind=kind))
    with pytest.raises(ValueError, match="index.faiss holds a IndexFlat"):
        LandmarkIndex.load(index_folder)


def test_a_record_nested_past_the_parser_depth_is_refused_as_no_record(index_folder, tmp_path):
    (index_folder / "meta.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match="not an index record"):
        LandmarkIndex.load(index_folder)


@pytest.fixture
def embeddings(tmp_path):
    """An embeddings file as ``landmark embed`` commits it, made without a model."""
    from landmark.io import commit, sidecar, temp_path
    path = tmp_path / "ref.npy"
    emb = photos()
    pairs = []
    for final, write in ((path, lambda p: np.save(p, emb.vectors)),
                         (sidecar(path, "ids.csv"), lambda p: emb.items.to_csv(p, index=False))):
        tmp = temp_path(final)
        with open(tmp, "wb") as f:
            write(f)
        pairs.append((tmp, final))
    commit(pairs, sidecar(path, "json"), {"rows": 12, "dim": 16})
    assert load_embeddings(path).vectors.shape == (12, 16)
    return path


def test_an_embeddings_record_that_is_a_fifo_does_not_block(embeddings, no_hang):
    marker = embeddings.with_suffix(".json")
    marker.unlink()
    os.mkfifo(marker)
    with pytest.raises(ValueError, match="missing or unreadable"):
        load_embeddings(embeddings)


@pytest.mark.parametrize("fifo_for", ["ref.npy", "ref.classes.npz"])
def test_an_embeddings_record_naming_a_fifo_does_not_block(embeddings, fifo_for, no_hang):
    os.mkfifo(embeddings.parent / "f")
    edit(embeddings.with_suffix(".json"), lambda record: (record["files"].update({fifo_for: "f"}),
                                                          record.pop("bytes")))
    with pytest.raises(ValueError, match="not a regular file"):
        load_embeddings(embeddings)


def test_an_embeddings_record_naming_a_file_elsewhere_is_refused(embeddings, tmp_path, no_hang):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(embeddings, elsewhere / "ref.npy")
    edit(embeddings.with_suffix(".json"), lambda record: record["files"].update({"ref.npy": str(elsewhere / "ref.npy")}))
    with pytest.raises(ValueError, match="is not a valid record"):
        load_embeddings(embeddings)


def test_an_index_whose_items_lack_the_landmark_column_is_refused_in_one_line(index_folder):
    items = index_folder / "items.csv"
    items.write_text(items.read_text().replace("landmark_id", "label", 1))
    edit(index_folder / "meta.json", lambda meta: meta["bytes"].update({"items.csv": items.stat().st_size}))
    with pytest.raises(ValueError, match="items.csv has no column landmark_id"):   # was KeyError at the first answer
        LandmarkIndex.load(index_folder)


def replace_array(embeddings, array) -> None:
    np.save(embeddings.parent / "x.npy", array)
    edit(embeddings.with_suffix(".json"), lambda record: (record["files"].update({"ref.npy": "x.npy"}),
                                                          record.pop("bytes")))


def test_an_embeddings_file_of_complex_numbers_is_refused(embeddings):
    replace_array(embeddings, np.zeros((12, 16), np.complex64))
    with pytest.raises(ValueError, match="holds complex64, not floating-point vectors"):
        load_embeddings(embeddings)


def test_vectors_with_nan_never_reach_an_index(embeddings):
    vectors = np.asarray(load_embeddings(embeddings).vectors).copy()
    vectors[7, 3] = np.nan
    replace_array(embeddings, vectors)
    with pytest.raises(ValueError, match="row 7 of the vectors holds NaN or inf"):
        LandmarkIndex.build(load_embeddings(embeddings), IndexParams(kind="flat"), {})


@pytest.mark.parametrize("params", [{"nprobe": -5}, {"kind": "nonsense"}, "not a mapping"])
def test_bad_index_settings_in_a_record_are_one_line_naming_the_file(index_folder, params):
    edit(index_folder / "meta.json", lambda meta: meta.update(params=params))
    with pytest.raises(ValueError, match="meta.json has bad index settings") as err:
        LandmarkIndex.load(index_folder)
    assert "\n" not in str(err.value)
