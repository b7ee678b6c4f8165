"""Layer freezing, offline ImageNet weights, weight files, checkpoints."""
import numpy as np
import pytest
import torch
from torch import nn

from landmark.models import LandmarkNet, WeightsError, backbone_layers, create_model, load_model, save_checkpoint
from landmark.models.weights import load_offline_imagenet, offline_weights_file


@pytest.fixture(scope="module")
def lite0():
    return create_model("tf_efficientnet_lite0", 5, weights="imagenet")


def test_freeze_bottom_layers(lite0):
    layers = backbone_layers(lite0.backbone)
    assert len(layers) == 98
    assert lite0.freeze(10) == 10
    flags = [all(p.requires_grad for p in m.parameters(recurse=False)) for _, m in layers]
    assert flags == [False] * 10 + [True] * 88
    assert all(p.requires_grad for p in lite0.head.parameters())
    lite0.train()
    norms = [m for _, m in layers[:10] if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)  # frozen BN keeps its statistics
    assert layers[20][1].training
    assert lite0.freeze(-1) == 98 and not any(p.requires_grad for p in lite0.backbone.parameters())
    assert lite0.freeze(0) == 0 and all(p.requires_grad for p in lite0.parameters())


def test_training_step_leaves_frozen_layers_unchanged(lite0):
    lite0.freeze(50)
    layers = backbone_layers(lite0.backbone)
    before = [p.detach().clone() for _, m in layers for p in m.parameters(recurse=False)]
    stats = layers[0][1].running_mean.clone() if isinstance(layers[0][1], nn.BatchNorm2d) else None
    opt = torch.optim.Adam([p for p in lite0.parameters() if p.requires_grad], lr=1e-2)
    lite0.train()
    loss = nn.functional.cross_entropy(lite0(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    after = [p.detach() for _, m in layers for p in m.parameters(recurse=False)]
    owners = [k for k, (_, m) in enumerate(layers) for _ in m.parameters(recurse=False)]
    changed = [not torch.equal(a, b) for a, b in zip(before, after)]
    assert not any(c for c, k in zip(changed, owners) if k < 50)
    assert any(c for c, k in zip(changed, owners) if k >= 50)
    if stats is not None:
        assert torch.equal(stats, layers[0][1].running_mean)


def test_offline_imagenet_logits_match_the_wheels_own_loader(l13):
    """timm tf_efficientnet_lite0 + our loader == efficientnet_lite_pytorch + its loader, on a real photo."""
    timm = pytest.importorskip("timm")
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    from landmark.data import image_path, load_image, read_train
    reference = ref_pkg.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(offline_weights_file(
        "tf_efficientnet_lite0"))).eval()
    ours = timm.create_model("tf_efficientnet_lite0").eval()
    load_offline_imagenet(ours, "tf_efficientnet_lite0", classifier=True)
    image_id = read_train(l13)["id"].iloc[0]
    img = load_image(image_path(l13, image_id)).resize((224, 224))
    x = (torch.from_numpy(np.array(img)).permute(2, 0, 1).float()[None] / 255 - 0.5) / 0.5
    with torch.no_grad():
        a, b = reference(x), ours(x)
    assert torch.allclose(a, b, atol=1e-4)
    assert a.softmax(1).max() > 0.05  # a real, confident-ish ImageNet prediction, not noise


def test_weights_from_a_file_and_clear_errors(tmp_path, lite0):
    torch.save(lite0.backbone.state_dict(), tmp_path / "backbone.pth")
    loaded = create_model("tf_efficientnet_lite0", 3, weights=str(tmp_path / "backbone.pth"))
    for (k, a), b in zip(lite0.backbone.state_dict().items(), loaded.backbone.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("tf_efficientnet_lite0", 3, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match="unknown backbone"):
        create_model("no_such_net", 3)
    torch.save({"x.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="does not fit"):
        create_model("tf_efficientnet_lite0", 3, weights=str(tmp_path / "other.pth"))


def test_hub_weights_offline_give_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="--weights"):
        create_model("resnet18", 3, weights="imagenet")


@pytest.mark.parametrize("backbone,head,dim", [("vgg16", "fc", 256), ("legacy_xception", "gem", 2048)])
def test_recipe_models_build_with_their_heads(backbone, head, dim):
    model = create_model(backbone, 7, weights="none")
    assert model.arch["head"] == head
    x = torch.randn(2, 3, 96, 96)
    assert model(x).shape == (2, 7) and model.embed(x).shape == (2, dim)


def test_checkpoint_round_trip(tmp_path, lite0):
    lite0.eval()
    save_checkpoint(tmp_path / "m.pt", lite0, list("abcde"), preprocess={"size": 64})
    model, ckpt = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), lite0(x))
    assert ckpt["classes"] == list("abcde") and isinstance(model, LandmarkNet)
    assert not (tmp_path / "m.pt.tmp").exists()
