"""The "no landmark" threshold stored in an export's metadata (or a checkpoint, or an index) is
read like any file from someone else: a value that is not a finite number in [0, 1] is refused in
one line when the model loads (before: NaN or 7 answered "no landmark" for every photo, -1 a
landmark for every one, "high" or [0.1] crashed with a bare float() error); a threshold the user
gives still overrides it."""
import json

import numpy as np
import pytest

from landmark.inference.answers import stored_threshold

BAD = [float("nan"), float("inf"), 7.0, -1, "0.5", "high", [0.1], True]


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_a_stored_threshold_that_is_not_a_score_is_refused(value):
    with pytest.raises(ValueError, match=r"stored 'no landmark' threshold for classifier scoring.*give --threshold"):
        stored_threshold({"reject_threshold": value}, None, "classifier")
    with pytest.raises(ValueError, match="for reference scoring"):
        stored_threshold({"reject_threshold": {"reference": value}}, None, "reference")


def test_good_stored_thresholds_are_returned():
    assert stored_threshold({"reject_threshold": 0.25}, None, "classifier") == 0.25
    assert stored_threshold({"reject_threshold": {"classifier": 0, "reference": 1}}, None, "reference") == 1
    assert stored_threshold({"reject_threshold": 0.25}, None, "reference") is None
    assert stored_threshold({}, None, "classifier") is None
    above_one = float(np.nextafter(1.0, 2.0))   # what rejection_threshold chooses when no answer is right
    assert stored_threshold({"reject_threshold": above_one}, None, "classifier") == above_one


def test_an_export_with_a_nan_threshold(tmp_path):
    """The torch-free recogniser refuses it; --threshold overrides it and answers."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from test_onnx_metadata import GOOD, export

    from landmark.inference.instant import InstantRecognizer
    from landmark.models.onnx_model import OnnxModel
    model = OnnxModel(export(tmp_path, json.dumps(dict(GOOD, reject_threshold={"classifier": float("nan")}))))
    with pytest.raises(ValueError, match="is nan, not a number in"):
        InstantRecognizer(model)
    answer = InstantRecognizer(model, threshold=0.5).recognize([np.full((40, 40, 3), 200, np.uint8)])[0]
    assert answer.threshold == 0.5 and answer.landmark_id in GOOD["classes"]


@pytest.mark.parametrize("value", [float("nan"), "x", -0.5, 2.0, None], ids=repr)
def test_an_index_with_a_damaged_landmark_threshold_is_refused(value):
    """An enrolled landmark's calibrated threshold in the index's meta.json: NaN made the landmark
    never answered, "x" crashed float() on the first photo of it, mid-run."""
    from landmark.retrieval.scoring import checked_landmark_thresholds
    meta = {"landmark_thresholds": {"new-1": {"threshold": 0.2, "photos": 5}, "new-2": {"threshold": value}}}
    with pytest.raises(ValueError, match="calibrated threshold of landmark new-2 is .*: enrol its photos again"):
        checked_landmark_thresholds(meta)
    assert checked_landmark_thresholds({"landmark_thresholds": {"new-1": {"threshold": 0.2}, "new-3": 1}}) == \
        {"new-1": {"threshold": 0.2}, "new-3": 1}
    assert checked_landmark_thresholds({}) == {}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 7.0, -1.0, "high", [0.1], True])
def test_the_floor_of_enrolled_thresholds_is_checked_given_or_stored(tmp_path, value):
    """enrol's floor (pipeline._run_scoring: the run's reference threshold, given or read from the
    index's checkpoint) outside [0, 1] or not finite is refused in one line, as stored thresholds are."""
    from types import SimpleNamespace

    import torch

    from landmark.retrieval.config import is_stored_threshold
    from landmark.retrieval.pipeline import _run_scoring
    assert not is_stored_threshold(value)
    index = SimpleNamespace(meta={"model": {"checkpoint": str(tmp_path / "best.pt")}})
    torch.save({"classes": ["a", "b"], "reject_threshold": {"classifier": 0.5, "reference": value}},
               tmp_path / "best.pt")
    if not isinstance(value, (str, list, bool)):   # a number given (the service passes the recogniser's)
        with pytest.raises(ValueError, match=r"threshold .* given as the floor .* not a number in \[0, 1\]"):
            _run_scoring(index, ["a", "b"], value)
    with pytest.raises(ValueError) as refused:
        _run_scoring(index, None, None)
    assert "\n" not in str(refused.value)
    assert f"{tmp_path / 'best.pt'} stores the reference 'no landmark' threshold" in str(refused.value)
    torch.save({"classes": ["a", "b"], "reject_threshold": {"classifier": 0.5, "reference": 0.25}},
               tmp_path / "best.pt")
    assert _run_scoring(index, None, None) == ({"a", "b"}, 0.25)
    assert _run_scoring(index, None, 1) == ({"a", "b"}, 1.0) and is_stored_threshold(float(np.nextafter(1.0, 2.0)))
