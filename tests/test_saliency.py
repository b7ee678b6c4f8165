"""Saliency maps on a real photo with real ImageNet weights."""
import os

import numpy as np
import pytest
import torch
from torch import nn

os.environ["HF_HUB_OFFLINE"] = "1"

from landmark.data import image_path, load_image  # noqa: E402
from landmark.models import create_model  # noqa: E402
from landmark.reporting.saliency import centre_share, guided_copy, saliency_maps  # noqa: E402

PHOTO = "00eb50e32c24c412"  # landmarks13 train, Alhambra, 640 x 360


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("tf_efficientnet_lite0", 3, weights="imagenet").eval()


@pytest.mark.slow
def test_maps_have_photo_shape_and_structure(model, l13):
    photo = load_image(image_path(l13, PHOTO))
    prep = {"size": 128, "mean": model.arch["mean"], "std": model.arch["std"]}
    maps = saliency_maps(model, photo, prep, target=1)
    assert maps.target == 1 and 0 < maps.confidence < 1
    for m in (maps.gradient, maps.guided):
        assert m.shape == (photo.height, photo.width) == (360, 640)
        assert m.dtype == np.float32 and m.min() >= 0 and m.std() > 0.05 * m.mean() > 0
    assert maps.guided_rgb.shape == (360, 640, 3)
    # guided backprop really modifies the ReLU6 gradients: it is not the plain gradient
    corr = np.corrcoef(maps.gradient.ravel(), maps.guided.ravel())[0, 1]
    assert corr < 0.95
    default = saliency_maps(model, photo, prep)
    with torch.no_grad():
        from landmark.data.transforms import eval_transform
        logits = model(eval_transform(128, prep["mean"], prep["std"])(photo)[None])
    assert default.target == int(logits.argmax())


def test_guided_copy_keeps_outputs_and_swaps_relu6(model):
    clone = guided_copy(model)
    assert not any(isinstance(m, nn.ReLU6) for m in clone.modules())
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())  # the original is untouched
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(clone(x), model(x), atol=1e-5)
    with pytest.raises(ValueError, match="no ReLU"):
        guided_copy(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Tanh()))


def test_centre_share():
    flat = np.ones((40, 80), np.float32)
    assert centre_share(flat) == pytest.approx(0.25)
    spot = np.zeros((40, 80), np.float32)
    spot[20, 40] = 1
    assert centre_share(spot) == 1.0
