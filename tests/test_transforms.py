"""Scheduled crop, crop positions, ten-crop voting."""
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from conftest import DATA

from landmark.config import CropSchedule
from landmark.data.transforms import ScheduledCrop, crop_origin, crop_probability, tta_transform
from landmark.inference import tta_vote

SCHEDULE = CropSchedule(p_start=0.1, p_end=0.5, resize=180, size=150, mode="random")


def test_crop_probability_is_linear_over_the_stage():
    assert [round(crop_probability(SCHEDULE, e, 5), 6) for e in range(5)] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert crop_probability(SCHEDULE, 0, 1) == 0.1


def test_crop_positions_by_mode():
    torch.manual_seed(0)
    assert crop_origin("center", 180, 150) == (15, 15)
    assert {crop_origin("corners", 180, 150) for _ in range(200)} == {(0, 0), (0, 30), (30, 0), (30, 30)}
    assert {crop_origin("edges", 180, 150) for _ in range(200)} == {(0, 15), (30, 15), (15, 0), (15, 30)}
    positions = {crop_origin("random", 180, 150) for _ in range(500)}
    assert len(positions) > 100 and all(0 <= t <= 30 and 0 <= l <= 30 for t, l in positions)
    with pytest.raises(ValueError):
        crop_origin("diagonal", 180, 150)


def test_scheduled_crop_resizes_then_crops_or_only_resizes():
    img = torch.arange(3 * 300 * 200, dtype=torch.float32).reshape(3, 300, 200)
    center = CropSchedule(p_start=1, p_end=1, resize=180, size=150, mode="center")
    out = ScheduledCrop(center)(img)
    expected = F.crop(F.resize(img, [180, 180], antialias=True), 15, 15, 150, 150)
    assert out.shape == (3, 150, 150) and torch.equal(out, expected)
    plain = ScheduledCrop(center, p=0.0)(img)
    assert torch.equal(plain, F.resize(img, [150, 150], antialias=True))


def test_scheduled_crop_frequency_follows_p():
    torch.manual_seed(0)
    img = torch.rand(3, 64, 64)
    crop = ScheduledCrop(CropSchedule(p_start=0.3, p_end=0.3, resize=60, size=40, mode="center"))
    plain = F.resize(img, [40, 40], antialias=True)
    cropped = sum(not torch.equal(crop(img), plain) for _ in range(2000))
    assert 0.27 < cropped / 2000 < 0.33


def test_ten_crops_shape():
    out = tta_transform(180, 150, [0.5] * 3, [0.5] * 3)(F.to_pil_image(torch.rand(3, 240, 320)))
    assert out.shape == (10, 3, 150, 150)


def test_vote_majority_and_confidence_rule():
    # 4 crops, 3 classes: class 1 wins 3 votes (0.9, 0.6, 0.5); class 0 one vote (0.95)
    probs = torch.tensor([[[0.05, 0.9, 0.05], [0.3, 0.6, 0.1], [0.95, 0.03, 0.02], [0.4, 0.5, 0.1]]])
    labels, conf = tta_vote(probs)
    assert labels.tolist() == [1] and conf.item() == pytest.approx((0.9 + 0.6 + 0.5) / 4)
    # 2-2 tie in votes: the larger summed probability wins
    probs = torch.tensor([[[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]]])
    labels, conf = tta_vote(probs)
    assert labels.tolist() == [0] and conf.item() == pytest.approx((0.9 + 0.8) / 4)


def test_uint8_resize_matches_pillow_within_one_grey_level():
    """Evaluation resizes the uint8 tensor (torch's antialiased kernel), not the PIL image:
    on a real photo the two agree to one grey level, so models fitted on either are served alike."""
    import glob

    import numpy as np
    from PIL import Image

    from landmark.data import load_image
    from landmark.data.transforms import resize_uint8
    files = sorted(glob.glob(str(DATA / "landmarks13" / "test" / "**" / "*.jpg"), recursive=True))[:3]
    if not files:
        pytest.skip(f"no photos under {DATA}")
    for f in files:
        photo = load_image(f)
        ours = resize_uint8(224)(photo).permute(1, 2, 0).numpy().astype(int)
        pillow = np.asarray(photo.resize((224, 224), Image.Resampling.BILINEAR)).astype(int)
        assert ours.shape == (224, 224, 3) and np.abs(ours - pillow).max() <= 1
        assert (ours != pillow).mean() < 0.01
