"""Embeddings files, FAISS index round trips, kNN voting, penalty and verification re-ranking."""
import os

import numpy as np
import pandas as pd
import pytest

from landmark.data import ImageError
from landmark.retrieval.embeddings import Embeddings, embed_images, load_embeddings, shrink_npy
from landmark.retrieval.index import IndexParams, LandmarkIndex, choose_kind, default_nlist
from landmark.retrieval.config import KnnConfig, VerifyConfig
from landmark.retrieval.knn import add_classifier, knn_vote, nonlandmark_similarity, recognise, verify_rerank


def clustered(n: int, d: int = 32, clusters: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``clusters`` random centres, and each row's cluster as label."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    labels = rng.integers(clusters, size=n)
    x = centres[labels] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def as_embeddings(x: np.ndarray, labels, prefix: str = "i") -> Embeddings:
    items = pd.DataFrame({"id": [f"{prefix}{i}" for i in range(len(x))], "landmark_id": [str(v) for v in labels],
                          "path": [f"/nowhere/{prefix}{i}.jpg" for i in range(len(x))]})
    return Embeddings(x, items)


def test_shrink_npy_keeps_rows(tmp_path):
    path = tmp_path / "a.npy"
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(10, 4))
    arr[:] = np.arange(40).reshape(10, 4)
    arr.flush()
    del arr
    shrink_npy(path, 7)
    back = np.load(path)
    assert back.shape == (7, 4) and back.dtype == np.float16
    np.testing.assert_array_equal(back, np.arange(28).reshape(7, 4))
    assert os.path.getsize(path) == 128 + 7 * 4 * 2  # header + data, nothing after
    with pytest.raises(ValueError):
        shrink_npy(path, 8)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq"])
def test_index_save_load_round_trip(tmp_path, kind):
    x, labels = clustered(3000)
    index = LandmarkIndex.build(as_embeddings(x, labels), IndexParams(kind=kind, pq_m=8, nprobe=8))
    queries = x[:50] + 0.01
    sims, idx = index.search(queries, 5)
    index.save(tmp_path / "idx")
    with pytest.raises(FileExistsError):
        index.save(tmp_path / "idx")
    back = LandmarkIndex.load(tmp_path / "idx")
    assert back.kind == kind and len(back) == 3000 and back.dim == 32
    s2, i2 = back.search(queries, 5)
    np.testing.assert_array_equal(i2, idx)
    np.testing.assert_allclose(s2, sims, rtol=1e-6)
    assert back.labels[idx[0, 0]] == str(labels[idx[0, 0]])
    # the approximate kinds still find the exact nearest neighbour among their top 5 (recall@5)
    exact = LandmarkIndex.build(as_embeddings(x, labels), IndexParams(kind="flat"))
    recall = (exact.search(queries, 1)[1][:, :1] == idx).any(1).mean()
    assert recall >= (1.0 if kind == "flat" else 0.9)


def test_add_enrols_new_landmark_and_skips_duplicates():
    x, labels = clustered(200, seed=1)
    index = LandmarkIndex.build(as_embeddings(x[:150], labels[:150]), IndexParams(kind="flat"))
    new = as_embeddings(x[150:], ["new"] * 50, prefix="n")
    added, skipped = index.add(new)
    assert (added, skipped) == (50, [])
    added, skipped = index.add(new)
    assert added == 0 and len(skipped) == 50
    _, idx = index.search(x[150:151], 1)
    assert index.labels[idx[0, 0]] == "new" and index.items["id"][idx[0, 0]] == "n0"


def test_save_interrupted_between_renames_keeps_the_old_index_then_completes(tmp_path, monkeypatch):
    """A crash after one file was replaced and before the other: meta.json still names the
    old index's files, which load whole (new labels are never paired with old vectors); the
    next save completes it and leaves no temporary file.  (tests/test_index_durability.py
    crashes every write step.)"""
    x, labels = clustered(120, seed=2)
    index = LandmarkIndex.build(as_embeddings(x[:100], labels[:100]), IndexParams(kind="flat"), {"names": {"1": "A"}})
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [".lock", "index.faiss", "items.csv", "meta.json"]
    index.add(as_embeddings(x[100:], ["new"] * 20, prefix="n"))
    index.meta["names"]["new"] = "B"
    real_replace = os.replace

    def crash_at_items(src, dst):
        if str(dst).endswith("items.csv"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_at_items)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "idx", overwrite=True)
    monkeypatch.setattr(os, "replace", real_replace)
    back = LandmarkIndex.load(tmp_path / "idx")
    assert len(back) == len(back.items) in (100, 120)
    index.save(tmp_path / "idx", overwrite=True)  # the next save completes it
    back = LandmarkIndex.load(tmp_path / "idx")
    assert len(back) == len(back.items) == 120 and back.meta["names"] == {"1": "A", "new": "B"}
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [".lock", "index.faiss", "items.csv", "meta.json"]


def test_auto_kind_and_nlist():
    assert [choose_kind(n) for n in (10, 99_999, 100_000, 5_000_000)] == ["flat", "flat", "ivf", "ivfpq"]
    assert default_nlist(1_000_000) == 4096  # 4 * sqrt(1e6) = 4000 -> 2^12
    assert default_nlist(1000) == 25  # 4 * 31.6 -> 128, capped at 1000 // 39
    assert default_nlist(10) == 1


def test_knn_vote_hand_computed():
    sims = np.array([[0.9, 0.8, 0.5], [0.7, -0.2, -np.inf]], dtype=np.float32)
    labels = np.array([["a", "b", "a"], ["c", "d", ""]])
    out = knn_vote(sims, labels, p=1.0)
    q0 = out[out["query"] == 0].set_index("landmark_id")["knn"]
    assert q0["a"] == pytest.approx((0.9 + 0.5) / 3) and q0["b"] == pytest.approx(0.8 / 3)
    assert list(q0.index) == ["a", "b"]  # best first
    q1 = out[out["query"] == 1].set_index("landmark_id")["knn"]
    assert q1["c"] == pytest.approx(0.7 / 3) and q1["d"] == 0.0  # negative similarity votes nothing
    assert knn_vote(sims[:1], labels[:1], p=2.0).iloc[0]["knn"] == pytest.approx((0.81 + 0.25) / 3)


def test_add_classifier_blends_union():
    cands = pd.DataFrame({"query": [0, 0], "landmark_id": ["a", "b"], "knn": [0.4, 0.2]})
    out = add_classifier(cands, np.array([["b", "c"]]), np.array([[0.7, 0.2]]), weight=0.5).set_index("landmark_id")
    assert out.loc["a", "score"] == pytest.approx(0.2)
    assert out.loc["b", "score"] == pytest.approx(0.45)
    assert out.loc["c", "score"] == pytest.approx(0.1)


def test_nonlandmark_similarity_hand_computed():
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    ref = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    assert nonlandmark_similarity(q, ref, k=2, p=1.0)[0] == pytest.approx(0.8)
    assert nonlandmark_similarity(q, ref, k=2, p=2.0)[0] == pytest.approx(0.68)


def test_recognise_penalty_lowers_nonlandmark_like_queries():
    # index: landmark "L" along e0; queries: q0 = e0 (landmark), q1 between e0 and e1 (like the non-landmarks)
    items = np.array([[1, 0, 0], [0.99, 0.141, 0]], dtype=np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    index = LandmarkIndex.build(as_embeddings(items, ["L", "L"]), IndexParams(kind="flat"))
    q = np.array([[1, 0, 0], [0.8, 0.6, 0]], dtype=np.float32)
    queries = as_embeddings(q, ["?", "?"], prefix="q")
    nonlandmarks = as_embeddings(np.array([[0, 1, 0]], dtype=np.float32), ["x"], prefix="n")
    plain = recognise(index, queries, KnnConfig(k=2, p=1.0)).predictions
    assert list(plain["landmark_id"]) == ["L", "L"]
    penalised = recognise(index, queries, KnnConfig(k=2, p=1.0, nonlandmark_k=1), nonlandmarks).predictions
    s0 = (1 + 0.99 / np.hypot(0.99, 0.141)) / 2
    assert penalised["score"][0] == pytest.approx(plain["score"][0], rel=1e-5) == pytest.approx(s0, rel=1e-5)
    assert penalised["score"][1] == pytest.approx(plain["score"][1] - 0.6, rel=1e-5)
    rejected = recognise(index, queries, KnnConfig(k=2, p=1.0, nonlandmark_k=1, reject_below=0.5),
                         nonlandmarks).predictions
    assert list(rejected["landmark_id"]) == ["L", ""]


def test_verify_rerank_hand_computed():
    cands = pd.DataFrame({"query": [0, 0, 1], "landmark_id": ["a", "b", "a"], "score": [0.5, 0.4, 0.3]})
    index_items = pd.DataFrame({"id": ["i0", "i1", "i2"], "landmark_id": ["b", "a", "a"], "path": ["p0", "p1", "p2"]})
    query_items = pd.DataFrame({"id": ["q0", "q1"], "path": ["qp0", "qp1"]})
    inliers = {("q0", "i0"): 40, ("q0", "i1"): 0, ("q1", "i1"): 5}

    def pair_inliers(qid, qpath, iid, ipath):
        if (qid, iid) == ("q1", "i2"):
            raise ImageError("not an image")
        return inliers[(qid, iid)]

    neighbours = np.array([[0, 1], [1, 2]])
    sims = np.ones((2, 2), dtype=np.float32)
    out = verify_rerank(cands, neighbours, sims, query_items=query_items, index_items=index_items,
                        pair_inliers=pair_inliers, config=VerifyConfig(top=2, weight=1.0, inlier_cap=50, min_inliers=20))
    got = out.set_index(["query", "landmark_id"])["score"]
    assert got[(0, "b")] == pytest.approx(0.4 + 40 / 50)  # now beats "a"
    assert got[(0, "a")] == pytest.approx(0.5)
    assert got[(1, "a")] == pytest.approx(0.3 + 5 / 50 - 10.0)  # no pair reaches 20 inliers
    assert list(out.attrs["max_inliers"]) == [40, 5]
    assert out.attrs["failures"] == [("q1", "i2", "not an image")]


def test_embed_images_streams_and_lists_rejects(tmp_path, l13):
    from landmark.data import read_train
    from landmark.data.gldv2 import image_path
    from landmark.models import create_model
    dirty = l13.parent / "dirty"
    train = read_train(l13).head(3)
    frame = pd.DataFrame({"id": list(train["id"]) + ["zero", "missing"],
                          "landmark_id": [str(v) for v in train["landmark_id"]] + ["0", "1"],
                          "path": [str(image_path(l13, i)) for i in train["id"]]
                          + [str(dirty / "synthetic_zero_bytes.jpg"), str(tmp_path / "nope.jpg")]})
    frame = frame.iloc[[0, 3, 1, 4, 2]].reset_index(drop=True)  # rejects between good images
    model = create_model("tf_efficientnet_lite0", 4, weights="none")
    pre = {"size": 64, "resize": 72, "mean": model.arch["mean"], "std": model.arch["std"]}
    emb, rejects = embed_images(model, pre, frame, tmp_path / "e", classes=["0", "1", "2", "3"], top_classes=2,
                                batch_size=2, workers=0)
    assert sorted(r.id for r in rejects) == ["missing", "zero"]
    assert list(emb.ids) == list(train["id"])
    assert emb.vectors.shape == (3, model.backbone.num_features) and emb.vectors.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(emb.vectors.astype(np.float32), axis=1), 1.0, atol=2e-3)
    assert emb.classes[0].shape == (3, 2) and np.all(emb.classes[1][:, 0] >= emb.classes[1][:, 1])
    rejects_csv = pd.read_csv(tmp_path / "e.rejects.csv")
    assert set(rejects_csv["id"]) == {"missing", "zero"}
    back = load_embeddings(tmp_path / "e.npy")
    np.testing.assert_array_equal(np.asarray(back.vectors), np.asarray(emb.vectors))
    with pytest.raises(FileExistsError):
        embed_images(model, pre, frame, tmp_path / "e", workers=0)


def test_enrolling_photos_indexed_already_under_another_landmark_says_nothing_was_enrolled(tmp_path):
    """Photos whose ids the index holds already (as another landmark's) are skipped as duplicates;
    the reply said '2 photos; ... coverage poor' for a landmark with no photo in the index, which
    no answer can ever name. Now: 0 photos, coverage 'none', and whose photos they are."""
    from landmark.retrieval.pipeline import enrol_index
    x, labels = clustered(60, seed=2)
    LandmarkIndex.build(as_embeddings(x, labels), IndexParams(kind="flat")).save(tmp_path / "idx")
    again = as_embeddings(x[:2], ["PETRA", "PETRA"])   # ids i0, i1: photos of landmarks labels[0], labels[1]
    _, result = enrol_index(tmp_path / "idx", again, {"PETRA": "Petra"}, classes=[], threshold=0.2, confirm=False)
    assert result["added"] == 0 and result["skipped_duplicates"] == 2 and result["new_landmarks"] == []
    cover = result["landmarks"]["PETRA"]
    owners = ", ".join(dict.fromkeys(str(v) for v in labels[:2]))
    assert cover["photos"] == 0 and cover["coverage"] == "none" and cover["threshold"] is None
    assert cover["summary"] == (f"0 photos; nothing enrolled: all 2 of its photos are in the index already, as "
                                f"photos of {owners}; send other photos of it")
    assert "PETRA" not in LandmarkIndex.load(tmp_path / "idx").meta.get("landmark_thresholds", {})


def test_photos_sent_again_store_the_threshold_the_reply_gives(tmp_path):
    """Re-enrolling a landmark's photos (all duplicates) recalibrates it and stores what the reply
    says: an index whose stored threshold went bad (1.00004, written by the calibration before it
    clipped similarities) is mended by what the refusal says, 'enrol its photos again' (was: the
    reply said 1.0 and meta.json kept 1.00004, the index refused at every load)."""
    import json
    from landmark.retrieval.pipeline import enrol_index
    x, labels = clustered(60, seed=3)
    LandmarkIndex.build(as_embeddings(x[:50], labels[:50]), IndexParams(kind="flat")).save(tmp_path / "idx")
    new = as_embeddings(x[50:], ["new"] * 10, prefix="n")
    _, first = enrol_index(tmp_path / "idx", new, classes=[], threshold=0.2, confirm=False)
    meta_file = tmp_path / "idx" / "meta.json"
    meta = json.loads(meta_file.read_text())
    assert meta["landmark_thresholds"]["new"]["threshold"] == first["landmarks"]["new"]["threshold"] <= 1
    meta["landmark_thresholds"]["new"]["threshold"] = 1.0000400548560744
    meta_file.write_text(json.dumps(meta))
    _, again = enrol_index(tmp_path / "idx", new, classes=[], threshold=0.2, confirm=False)
    assert again["added"] == 0 and again["skipped_duplicates"] == 10
    stored = json.loads(meta_file.read_text())["landmark_thresholds"]["new"]["threshold"]
    assert stored == again["landmarks"]["new"]["threshold"] == pytest.approx(first["landmarks"]["new"]["threshold"])


def test_a_new_landmark_named_as_another_but_for_case_is_refused(tmp_path):
    """'petra_JORDAN' (shown 'petra JORDAN') or 'Petra' named 'petra jordan' beside 'Petra Jordan':
    answers and photo keywords could not tell them apart; refused in one line, the index unchanged,
    as class folders named alike are refused when data loads."""
    from landmark.retrieval.pipeline import enrol_index
    x, labels = clustered(40, seed=4)
    base = as_embeddings(x[:30], ["11" if v % 2 else "9" for v in labels[:30]])
    built = LandmarkIndex.build(base, IndexParams(kind="flat"))
    built.meta["names"] = {"11": "Petra Jordan", "9": "Machu Picchu"}
    built.save(tmp_path / "idx")
    before = (tmp_path / "idx" / "items.csv").read_bytes()
    for label, names in (("petra_JORDAN", None), ("petra", {"petra": "petra  jordan"})):
        spelt = (names or {}).get(label, label)
        with pytest.raises(ValueError, match=rf"^'{spelt}' differs from 'Petra Jordan', a landmark this index already "
                                             r"has, only in case, '_' or spaces: to add photos of Petra Jordan, give "
                                             r"its id '11' exactly; for another landmark, choose a name that differs"):
            enrol_index(tmp_path / "idx", as_embeddings(x[30:], [label] * 10, prefix="n"), names, classes=[],
                        threshold=0.2, confirm=False)
    assert (tmp_path / "idx" / "items.csv").read_bytes() == before
    _, ok = enrol_index(tmp_path / "idx", as_embeddings(x[30:], ["petra-2"] * 10, prefix="n"), {"petra-2": "Petra Jordan (north)"},
                        classes=[], threshold=0.2, confirm=False)
    assert ok["added"] == 10
    _, known = enrol_index(tmp_path / "idx", as_embeddings(x[30:32], ["11"] * 2, prefix="k"), classes=[],
                           threshold=0.2, confirm=False)   # more photos of the landmark itself: as before
    assert known["added"] == 2
