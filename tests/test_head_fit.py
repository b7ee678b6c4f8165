"""The probe's head fit at any size: the size-based choice between L-BFGS and the streaming fit,
the disk-backed descriptor file, the memory-aware index choice, and classes of 1 or 2 photos."""
import json

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from landmark.config import load_config
from landmark.models.heads import GeMHead
from landmark.retrieval.config import IndexParams
from landmark.retrieval.embeddings import Embeddings
from landmark.retrieval.index import LandmarkIndex, choose_kind
from landmark.training.head_fit import FeatureFile, FeatureWriter, choose_fit, lbfgs_bytes, top_classes
from landmark.training.probe import fit_lbfgs, fit_streamed

STAGE = load_config("fast").stages[-1]


def test_the_fit_is_chosen_by_the_memory_lbfgs_would_hold():
    # landmarks13: 609 photos x 2 views, 13 classes -> 3 MB: L-BFGS; GLDv2-clean: 1.6M x 2, 81k classes -> stream
    assert lbfgs_bytes(1218, 13, 1280) == 4 * (1218 * 1280 + 3 * 1218 * 13 + 44 * 1281 * 13)
    assert choose_fit(1218, 13, 1280, STAGE.probe_memory_gb) == "lbfgs"
    assert choose_fit(3_200_000, 81_313, 1280, STAGE.probe_memory_gb) == "stream"
    assert choose_fit(20_000, 1000, 1280, 0.25) == "stream" and choose_fit(20_000, 1000, 1280, 1.0) == "lbfgs"
    assert choose_fit(3_200_000, 81_313, 1280, 0.25, "lbfgs") == "lbfgs"   # forced
    with pytest.raises(ValueError, match="auto, lbfgs or stream"):
        choose_fit(10, 2, 4, 1.0, "adam")


def separable(classes=6, per_class=30, dim=32, seed=0):
    """Gaussian classes around well separated centres: train rows (2 views) and validation rows."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.normal(size=(classes, dim))
    y = np.repeat(np.arange(classes), per_class)
    x = (centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32)
    vy = np.tile(np.arange(classes), 5)
    vx = (centres[vy] + rng.normal(size=(len(vy), dim))).astype(np.float32)
    return np.concatenate([x, x + 0.1]), np.concatenate([y, y]), vx, vy


def write(path, x, y):
    writer = FeatureWriter(path, len(x), x.shape[1])
    half = len(x) // 2
    writer.add(x[:half], y[:half], np.zeros(half), [f"i{k}" for k in range(half)])
    writer.add(x[half:], y[half:], np.ones(len(x) - half), [f"i{k}" for k in range(len(x) - half)])
    return writer.finish()


@pytest.mark.parametrize("sampled", [False, True])
def test_both_fits_agree_on_a_separable_case(tmp_path, sampled):
    x, y, vx, vy = separable(classes=12 if sampled else 6)
    classes = int(y.max()) + 1
    features = write(tmp_path / "f.npy", x, y)
    torch.manual_seed(0)
    exact = GeMHead(x.shape[1], classes)
    fit_lbfgs(exact, torch.from_numpy(x), torch.from_numpy(y), STAGE)
    torch.manual_seed(0)
    streamed = GeMHead(x.shape[1], classes)
    stage = STAGE.model_copy(update={"stream_classes": 4}) if sampled else STAGE   # 12 classes > 4: sampled
    stats = fit_streamed(streamed, features, classes, stage)
    assert stats["init"] == "prototype" and stats["sampled_softmax"] is sampled
    a, pa = top_classes(exact, vx)
    b, pb = top_classes(streamed, vx)
    assert (a[:, 0] == vy).mean() == 1.0 and (b[:, 0] == vy).mean() == 1.0
    assert pa.shape == (len(vx), 1) and pb.dtype == np.float32
    # the same objective: the streamed head is within 0.1 of L-BFGS's mean confidence on validation
    assert abs(float(pa.mean()) - float(pb.mean())) < 0.1


def test_streamed_rows_equal_the_written_ones(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 5)).astype(np.float32)
    writer = FeatureWriter(tmp_path / "f.npy", 12, 5, {"key": "k"})   # 12 announced, 10 written (2 rejected)
    writer.add(x[:4], np.arange(4), np.zeros(4), list("abcd"))
    writer.add(torch.from_numpy(x[4:]), np.arange(4, 10), np.ones(6), list("efghij"))
    done = writer.finish()
    again = FeatureFile.open(tmp_path / "f.npy")
    assert len(again) == 10 and again.meta["key"] == "k" and again.meta["rows"] == 10
    rows, parts = zip(*again.chunks(chunk=3))
    assert np.array_equal(np.concatenate(rows), np.arange(10))
    assert np.array_equal(np.concatenate(parts), x.astype(np.float16).astype(np.float32))
    assert done.targets.tolist() == list(range(10)) and done.views.tolist() == [0] * 4 + [1] * 6
    assert done.ids.tolist() == list("abcdefghij")
    _, picked = next(again.chunks(rows=np.array([7, 2])))   # any rows, returned in file order
    assert np.array_equal(picked, x[[2, 7]].astype(np.float16).astype(np.float32))


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmRSS from /proc")
def test_shards_join_in_one_process_row_order(tmp_path):
    """The descriptor files of 2 torchrun ranks (DistributedSampler shards: rank r holds photos
    r, r + 2, ..., the last shard padded with photo 0 again) join into the rows one process writes
    for batches of 3: each batch's photos in dataset order, then their mirrors; each row once."""
    from types import SimpleNamespace

    from landmark.training.probe import _join_shards
    n, dim, batch = 7, 4, 3
    ids = [f"p{k}" for k in range(n)]
    value = (lambda k, v: np.full(dim, 10 * k + v, dtype=np.float32))   # photo k, view v
    padded = list(range(n)) + [0]
    parts = []
    for rank in range(2):
        shard = padded[rank::2]
        writer = FeatureWriter(tmp_path / f"probe.rank{rank}-of-2.npy", 2 * len(shard), dim)
        for v in range(2):
            writer.add(np.stack([value(k, v) for k in shard]), [k % 3 for k in shard], [v] * len(shard),
                       [ids[k] for k in shard])
        writer.finish()
        parts.append(tmp_path / f"probe.rank{rank}-of-2.npy")
    joined = _join_shards(parts, tmp_path / "probe.npy", SimpleNamespace(ids=np.array(ids)), batch=batch,
                          meta={"key": "k"})
    expected = [(k, v) for b in range(0, n, batch) for v in range(2) for k in range(b, min(b + batch, n))]
    assert [(int(i[1:]), int(v)) for i, v in zip(joined.ids, joined.views)] == expected
    np.testing.assert_array_equal(np.asarray(joined.x, dtype=np.float32), np.stack([value(k, v) for k, v in expected]))
    np.testing.assert_array_equal(joined.targets, [k % 3 for k, _ in expected])
    assert joined.meta["key"] == "k" and sorted(p.name for p in tmp_path.iterdir()) == [
        "probe.json", "probe.npy", "probe.rows.npz"]


def test_writing_features_does_not_keep_them_in_memory(tmp_path):
    # 128 MB of float16 rows (GLDv2-clean's file is 8.2 GB): the writer's resident memory stays
    # that of one batch (a memory map of the file kept every written page resident: +128 MB)
    rows, dim, batch = 50_000, 1280, 5_000
    x = np.random.default_rng(0).normal(size=(batch, dim)).astype(np.float16)
    writer = FeatureWriter(tmp_path / "f.npy", rows, dim)
    before = _rss_bytes()
    for start in range(0, rows, batch):
        writer.add(x + np.float16(start / rows), np.zeros(batch), np.zeros(batch), ["a"] * batch)
    grown = _rss_bytes() - before
    done = writer.finish()
    assert grown < 48 * 2**20, f"RSS grew by {grown / 2**20:.0f} MB while writing 128 MB"
    with pytest.raises(ValueError, match=r"expected \[B, 1280\]"):
        FeatureWriter(tmp_path / "g.npy", 2, dim).add(np.zeros((2, 5)), [0, 0], [0, 0], ["a", "b"])
    assert np.array_equal(done.read(45_000, 45_002), (x[:2] + np.float16(0.9)).astype(np.float32))


def test_an_interrupted_write_is_not_accepted(tmp_path):
    path = tmp_path / "f.npy"
    x = np.ones((3, 4), dtype=np.float32)
    writer = FeatureWriter(path, 3, 4)
    writer.add(x, [0, 1, 2], [0, 0, 0], ["a", "b", "c"])   # killed before finish(): nothing in place
    with pytest.raises(FileNotFoundError):
        FeatureFile.open(path)
    old = write(path, x, np.array([0, 1, 2]))
    interrupted = FeatureWriter(path, 3, 4)                  # a second write, killed halfway
    interrupted.add(2 * x, [0, 1, 2], [0, 0, 0], ["a", "b", "c"])
    assert np.array_equal(FeatureFile.open(path).x, old.x)   # the old file is still the one read
    path.with_suffix(".json").unlink()                        # a write killed between array and marker
    with pytest.raises(ValueError, match="unfinished"):
        FeatureFile.open(path)


def test_the_index_switches_to_a_compressed_kind_within_its_budget_and_keeps_recall():
    rng = np.random.default_rng(0)
    n, d = 4000, 64
    centres = rng.normal(size=(200, d))
    base = centres[rng.integers(200, size=n)] + 0.6 * rng.normal(size=(n, d))
    base = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)
    queries = base[:300] + 0.05 * rng.normal(size=(300, d)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    emb = Embeddings(base, pd.DataFrame({"id": np.arange(n).astype(str), "landmark_id": "x"}))
    # flat would take 4 * d * n = 1 MB; a 0.5 MB budget leaves ivfsq (d bytes per vector: 256 kB)
    budget = 0.5 / 1024
    assert choose_kind(n, d, budget) == "ivfsq" and choose_kind(n, d, 1e-4) == "ivfpq"
    assert choose_kind(n, d) == "flat" and choose_kind(3_000_000, 1280, 4.0) == "ivfsq"
    assert choose_kind(5_000_000, 1280, 4.0) == "ivfpq"
    exact = LandmarkIndex.build(emb, IndexParams(kind="flat"))
    small = LandmarkIndex.build(emb, IndexParams(memory_gb=budget, nprobe=8))
    assert small.kind == "ivfsq"
    _, want = exact.search(queries, 1)
    _, got = small.search(queries, 1)
    assert (got[:, 0] == want[:, 0]).mean() >= 0.95


@pytest.mark.parametrize("kind", ["ivfsq", "hnswsq"])
def test_compressed_indexes_load_back_and_keep_recall(tmp_path, kind):
    # a saved ivfsq index was refused at load ("meta.json says kind 'ivfsq', index.faiss holds a
    # IndexIVFScalarQuantizer"); hnswsq is the graph over 8-bit codes
    rng = np.random.default_rng(1)
    n, d = 3000, 32
    base = rng.normal(size=(n, d)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = base[:200] + 0.05 * rng.normal(size=(200, d)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    emb = Embeddings(base, pd.DataFrame({"id": np.arange(n).astype(str), "landmark_id": "x"}))
    built = LandmarkIndex.build(emb, IndexParams(kind=kind, nprobe=16, ef_search=64))
    built.save(tmp_path / "index")
    again = LandmarkIndex.load(tmp_path / "index")
    assert again.kind == kind and len(again) == n
    assert (faiss_efsearch(again) == 64) if kind == "hnswsq" else (faiss_nprobe(again) == 16)
    _, want = LandmarkIndex.build(emb, IndexParams(kind="flat")).search(queries, 1)
    _, got = again.search(queries, 1)
    assert (got[:, 0] == want[:, 0]).mean() >= 0.95


def faiss_nprobe(index):
    import faiss
    return faiss.extract_index_ivf(index.index).nprobe


def faiss_efsearch(index):
    return index.index.hnsw.efSearch


@pytest.fixture()
def model():
    from landmark.models import create_model
    torch.manual_seed(0)
    net = create_model("test_efficientnet", 3, weights="none")
    net.freeze(-1)
    return net.eval()


def photo_loader(model, root, n=7):
    from PIL import Image
    from torch.utils.data import DataLoader

    from landmark.data import ImageDataset, collate
    from landmark.data.transforms import eval_transform
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        path = root / f"p{k}.png"
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        rows.append((f"p{k}", str(k % 3), str(path)))
    frame = pd.DataFrame(rows, columns=["id", "landmark_id", "path"])
    transform = eval_transform(32, model.preprocess.mean, model.preprocess.std)
    return DataLoader(ImageDataset(frame, transform, targets=frame["landmark_id"].astype(int).to_numpy()),
                      batch_size=3, collate_fn=collate)


def test_fit_probe_streams_from_a_file_it_writes_once(tmp_path, model):
    from landmark.training.probe import fit_probe
    loader = photo_loader(model, tmp_path)
    stage = STAGE.model_copy(update={"probe_fit": "stream", "stream_min_steps": 5})
    stats = fit_probe(model, loader, "cpu", {}, stage, feature_dir=tmp_path / "features")
    assert stats["fit"] == "stream" and stats["images"] == 7
    meta = json.loads((tmp_path / "features" / "probe.json").read_text())
    assert meta["rows"] == 14 and meta["dim"] == model.backbone.num_features
    calls = []
    forward = model.forward_features
    model.forward_features = lambda x: (calls.append(len(x)), forward(x))[1]
    again = fit_probe(model, loader, "cpu", {}, stage, feature_dir=tmp_path / "features")
    assert calls == [] and again["images"] == 7   # the same backbone and photos: read back, not computed
    assert fit_probe(model, loader, "cpu", {}, STAGE)["fit"] == "lbfgs"   # auto at this size


@pytest.mark.slow
def test_classes_of_one_and_two_photos_are_trained_on(l13, tmp_path):
    """A real `fast` run on landmarks13 photos with classes of 5, 5, 2 and 1 photo: the small
    classes are kept, trained on and counted; the run records the fit it used."""
    import landmark
    from landmark.models import load_model
    frame = pd.read_csv(l13 / "train.csv", dtype=str)
    data = tmp_path / "data"
    for label, n in {"0": 5, "1": 5, "2": 2, "3": 1}.items():
        (data / label).mkdir(parents=True)
        for image_id in frame.loc[frame["landmark_id"] == label, "id"].head(n):
            source = l13 / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"
            (data / label / f"{image_id}.jpg").symlink_to(source)
    config = load_config("fast", {"data": {"workers": 0, "batch_size": 8}})
    best = landmark.train(config, data, tmp_path / "run")
    split = pd.read_csv(tmp_path / "run" / "split.csv", dtype=str)
    assert split.groupby("landmark_id").size().to_dict() == {"0": 5, "1": 5, "2": 2, "3": 1}
    assert set(split.loc[split["landmark_id"].isin(["2", "3"]), "split"]) == {"train"}   # too small to validate
    summary = json.loads((tmp_path / "run" / "split_summary.json").read_text())
    assert summary["small_classes"] == {"classes_with_1_photo": 1, "classes_with_2_photos": 1}
    assert summary["split"]["classes_without_val"] == 2
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert history[0]["train_fit"] == "lbfgs"
    model, ckpt = load_model(best)
    assert ckpt["classes"] == ["0", "1", "2", "3"] and ckpt["final_fit"]["fit"] == "lbfgs"
    assert ckpt["final_fit"]["images"] == 13
    # the head answers the singleton's own photo with its class
    assert history[0]["train_accuracy"] == 1.0


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmRSS from /proc")
def test_indexing_a_mapped_file_does_not_keep_it_in_memory(tmp_path):
    # the index build streams memory-mapped embeddings chunk by chunk (iter_chunks): 128 MB of
    # float16 rows read through the map leave the process's RSS (the map kept them: +128 MB)
    from landmark.retrieval.index_reader import iter_chunks
    rows, dim = 50_000, 1280
    x = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float16, shape=(rows, dim))
    x[:] = np.float16(0.5)
    x[-1, 0] = np.float16(2.0)
    del x
    vectors = np.load(tmp_path / "v.npy", mmap_mode="r")
    before = _rss_bytes()
    total, last = 0.0, None
    for start, chunk in iter_chunks(vectors, chunk=5_000):
        total += float(chunk.sum())
        last = chunk
    grown = _rss_bytes() - before
    assert grown < 48 * 2**20, f"RSS grew by {grown / 2**20:.0f} MB while reading 128 MB"
    assert last.dtype == np.float32 and last[-1, 0] == 2.0 and total == 0.5 * rows * dim + 1.5


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmRSS from /proc")
def test_a_training_sample_of_a_mapped_file_leaves_no_pages_in_memory(tmp_path):
    # an IVF build takes a random training sample of the memory-mapped vectors first, which touches
    # most pages of the file (1M x 1280: 2.6 GB mapped during k-means); drop_pages unmaps them
    from landmark.retrieval.index_reader import drop_pages
    x = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float16, shape=(50_000, 1280))
    x[:] = np.float16(0.25)
    del x
    vectors = np.load(tmp_path / "v.npy", mmap_mode="r")
    before = _rss_bytes()
    sample = np.ascontiguousarray(vectors[np.arange(0, 50_000, 5)], dtype=np.float32)   # 10k rows of 50k
    drop_pages(vectors)
    grown = _rss_bytes() - before
    assert grown < 48 * 2**20 + sample.nbytes, f"RSS grew by {grown / 2**20:.0f} MB for a 49 MB sample"
    assert sample.shape == (10_000, 1280) and float(sample.mean()) == 0.25
    drop_pages(np.zeros(3))   # not a map: nothing to do
