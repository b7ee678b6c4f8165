"""Geometric verification on real photos: RootSIFT, mutual ratio matching, MAGSAC++ inliers, cache, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from landmark.cli import app
from landmark.data import ImageError, image_path, load_image
from landmark.retrieval import FeatureCache, count_inliers, local_features, match
from landmark.retrieval.verification import (MIN_MATCHES, SAME_LANDMARK_INLIERS, LocalFeatures, mutual_matches,
                                             root_sift)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
L13 = DATA / "landmarks13"
# Chichen Itza, El Castillo seen from the same side in two different photos (checked by eye;
# neither is in known_noise.csv): 98 inliers measured.
SAME = ("6e7f8a4936594a91", "4a119c8c1841b13f")
# Chichen Itza vs Machu Picchu (clean): 8 inliers measured, the RANSAC noise floor.
DIFFERENT = ("6e7f8a4936594a91", "c82873b53f2dfe60")


def _path(image_id: str) -> Path:
    return image_path(L13, image_id)


@pytest.fixture(scope="module")
def features() -> dict[str, LocalFeatures]:
    ids = {*SAME, *DIFFERENT}
    return {i: local_features(_path(i)) for i in sorted(ids)}


def test_root_sift_known_values():
    d = np.zeros((2, 128), np.float32)
    d[0, :2] = [1, 3]
    out = root_sift(d)
    assert out.dtype == np.float32 and out.shape == (2, 128)
    assert out[0, :2].tolist() == pytest.approx([0.5, np.sqrt(0.75)])
    assert np.linalg.norm(out[0]) == pytest.approx(1.0)
    assert not out[1].any()   # an all-zero descriptor stays zero


def test_local_features_shapes_cap_and_resize():
    img = load_image(_path(SAME[1]))   # 640 px wide
    f = local_features(img, max_keypoints=200, max_side=320)
    assert max(f.size) == 320 and f.size[0] / f.size[1] == pytest.approx(img.width / img.height, rel=0.01)
    assert len(f) == 200 and f.keypoints.shape == (200, 2) and f.descriptors.shape == (200, 128)
    assert f.keypoints.dtype == np.float32 and f.descriptors.dtype == np.float32
    assert (f.keypoints >= 0).all() and (f.keypoints[:, 0] < f.size[0]).all() and (f.keypoints[:, 1] < f.size[1]).all()
    assert np.allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-4)
    # the strongest keypoints: the 200 of a 1000-keypoint run are its first 200
    full = local_features(img, max_keypoints=1000, max_side=320)
    assert np.array_equal(full.keypoints[:200], f.keypoints)


def test_same_landmark_pair_has_many_inliers(features):
    a, b = features[SAME[0]], features[SAME[1]]
    result = match(a, b)
    assert result.num_inliers >= 60
    assert result.num_inliers >= SAME_LANDMARK_INLIERS
    assert count_inliers(a, b) == result.num_inliers
    # inliers are a subset of the tentative matches, which are mutual nearest neighbours
    assert {tuple(p) for p in result.inliers.tolist()} <= {tuple(p) for p in result.matches.tolist()}
    assert len(np.unique(result.matches[:, 0])) == len(result.matches) == len(np.unique(result.matches[:, 1]))


def test_different_landmarks_have_few_inliers(features):
    a, b = features[DIFFERENT[0]], features[DIFFERENT[1]]
    assert count_inliers(a, b) < SAME_LANDMARK_INLIERS
    assert count_inliers(a, b, model="homography") < 10
    assert count_inliers(features[SAME[0]], features[SAME[1]]) > 5 * max(1, count_inliers(a, b))


def test_known_homography_gives_many_consistent_inliers():
    img = load_image(_path(SAME[1]))                                   # 640 x 427 real photo
    w, h = img.size
    H = np.array([[0.85, -0.12, 60.0], [0.10, 0.90, 20.0], [2e-4, 1e-4, 1.0]])
    warped = Image.fromarray(cv2.warpPerspective(np.asarray(img), H, (w, h), flags=cv2.INTER_LINEAR))
    a, b = local_features(img), local_features(warped)
    result = match(a, b, model="homography")
    assert result.num_inliers >= 300                                   # 420 of 427 tentative measured
    pa = a.keypoints[result.inliers[:, 0]].astype(np.float64)
    pb = b.keypoints[result.inliers[:, 1]].astype(np.float64)
    projected = cv2.perspectiveTransform(pa[None], H)[0]
    errors = np.linalg.norm(projected - pb, axis=1)
    assert np.median(errors) < 1.0 and np.mean(errors < 3.0) > 0.99
    corners = np.array([[[0, 0], [w, 0], [w, h], [0, h]]], np.float64)
    assert np.abs(cv2.perspectiveTransform(corners, result.matrix) - cv2.perspectiveTransform(corners, H)).max() < 3
    # the fundamental matrix (default model) accepts the same correspondences
    assert count_inliers(a, b) >= 300


def test_too_few_matches_give_zero(features):
    a = features[SAME[0]]
    tiny = LocalFeatures(a.keypoints[:5], a.descriptors[:5], a.size)
    assert len(mutual_matches(tiny, tiny)) == 5 < MIN_MATCHES["fundamental"]
    assert count_inliers(tiny, tiny) == 0
    empty = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), (10, 10))
    assert count_inliers(empty, a) == 0 and len(match(a, empty).matches) == 0


def test_feature_cache_round_trip(tmp_path):
    cache = FeatureCache(tmp_path / "cache", max_keypoints=300, max_side=480)
    path = _path(SAME[0])
    first = cache.get(SAME[0], path)
    assert cache.file(SAME[0]).is_file() and (cache.misses, cache.hits) == (1, 0)
    again = cache.get(SAME[0], "/nonexistent/not/read/when/cached.jpg")
    assert (cache.misses, cache.hits) == (1, 1)
    fresh = local_features(path, max_keypoints=300, max_side=480)
    for f in (first, again):
        assert np.array_equal(f.keypoints, fresh.keypoints) and np.array_equal(f.descriptors, fresh.descriptors)
        assert f.descriptors.dtype == np.float32 and f.size == fresh.size
    # other settings: extracted again, not served stale
    other = FeatureCache(tmp_path / "cache", max_keypoints=100, max_side=480)
    assert len(other.get(SAME[0], path)) == 100 and other.misses == 1
    with pytest.raises(ValueError):
        cache.file("../escape")


def test_feature_cache_bad_image_raises_and_writes_nothing(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(ImageError):
        cache.get("zero", DATA / "dirty" / "synthetic_zero_bytes.jpg")
    assert not cache.file("zero").exists()


def test_cli_match_draws_png_and_refuses_overwrite(tmp_path):
    out = tmp_path / "match.png"
    runner = CliRunner()
    args = ["match", str(_path(SAME[0])), str(_path(SAME[1])), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["inliers"] >= 60 and report["same_landmark"] is True
    png = Image.open(out)
    assert png.format == "PNG" and png.width >= 1000
    assert runner.invoke(app, args).exit_code == 2                      # exists, no --overwrite
    bad = runner.invoke(app, ["match", str(DATA / "dirty" / "synthetic_html_page.jpg"), str(_path(SAME[1]))])
    assert bad.exit_code == 2 and "cannot read" in bad.output
