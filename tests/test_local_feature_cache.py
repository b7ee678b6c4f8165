"""The local-feature cache read as files from someone else: a damaged or edited ``.npz`` (arrays of
the wrong shape, count or type, NaN, a truncated zip, a pickled object array) is extracted again
and replaced (before: broadcast errors, an AssertionError inside matching, or NaN keypoints that
silently gave 0 inliers)."""
import numpy as np
import pytest

from conftest import DATA
from landmark.retrieval.config import LocalConfig
from landmark.retrieval.local import LocalFeatureCache, LocalMatcher, verify_pair

PHOTOS = [DATA / "nonlandmarks" / "images" / "2/a/a/2aadb4261ffa716a.jpg"]


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A rootsift cache holding one photo's features; the features and the file."""
    folder = tmp_path_factory.mktemp("cache")
    cache = LocalFeatureCache(folder, LocalMatcher(LocalConfig(features="rootsift", max_keypoints=150)))
    feats = cache.get(PHOTOS[0])
    key = cache.key(PHOTOS[0])
    return cache, feats, folder / key[:2] / f"{key}.npz", key


N = 150
DAMAGE = {
    "keypoints with 3 columns": dict(keypoints=np.zeros((N, 3), np.float32)),
    "fewer descriptors than keypoints": dict(descriptors=np.zeros((N - 50, 128), np.float16)),
    "64-wide descriptors": dict(descriptors=np.zeros((N, 64), np.float16)),
    "a size of one number": dict(size=np.array([5])),
    "NaN keypoints": dict(keypoints=np.full((N, 2), np.nan, np.float32)),
    "a banner below the photo": dict(banner=np.array(10**6)),
    "a text banner": dict(banner=np.array("x")),
    "object descriptors": dict(descriptors=np.array([{"a": 1}], dtype=object)),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_cache_file_is_extracted_again(cached, kind):
    cache, feats, target, key = cached
    assert len(feats) == N
    arrays = dict(keypoints=feats.keypoints, descriptors=feats.descriptors.astype(np.float16),
                  size=np.array(feats.size), banner=np.array(feats.banner), key=np.array(key))
    np.savez(target, **{**arrays, **DAMAGE[kind]})   # an object array is pickled into the file
    hits, misses = cache.hits, cache.misses
    again = cache.get(PHOTOS[0])
    assert (cache.hits, cache.misses) == (hits, misses + 1)
    np.testing.assert_array_equal(again.keypoints, feats.keypoints)
    assert again.size == feats.size and again.descriptors.shape == (N, 128)
    assert verify_pair(cache.matcher, again, feats).num_inliers > 20   # the photo matches itself
    cache.get(PHOTOS[0])   # the file was replaced: a hit now
    assert cache.hits == hits + 1


def test_a_truncated_cache_file_is_extracted_again(cached):
    cache, feats, target, _ = cached
    cache.get(PHOTOS[0])
    target.write_bytes(target.read_bytes()[:300])
    misses = cache.misses
    assert len(cache.get(PHOTOS[0])) == N and cache.misses == misses + 1
